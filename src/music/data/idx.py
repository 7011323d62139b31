"""Read IDX files (the MNIST family's format), plain or gzipped, with clear errors. (The tests write them:
tests/conftest.py's write_idx.)"""

import gzip
import math
import struct
from pathlib import Path

import torch

from music.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | Path) -> torch.Tensor:
    """The uint8 array stored in an IDX file; raises DataError naming the file if it is not one."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes where its header {list(dims)} says {expected} (truncated?)")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)
