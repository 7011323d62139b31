"""Artifacts (θ0, fine-tunes) stored under a key computed from exactly the config that determines them.

An entry is one safetensors file `<name>-<key>.safetensors`, written to a temporary file and renamed, so a
reader never sees half of it; it carries a SHA-256 of its tensors, checked on every load, so a damaged entry
is rebuilt instead of used; a file lock per entry makes concurrent builders build it once.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from music.atomic import atomic_path, stale_temporaries
from music.console import CONSOLE

log = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]


def cache_key(material: dict) -> str:
    """A short stable hash of JSON-serialisable `material` (key order does not matter)."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CorruptEntry(Exception):
    pass


def tensors_digest(tensors: Tensors) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def load_verified(path: Path) -> Tensors:
    """The tensors of an entry, or CorruptEntry if the file is unreadable or fails its checksum."""
    try:
        with safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get("sha256")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # whatever a damaged file makes the reader raise
        raise CorruptEntry(f"unreadable: {e}") from None
    if expected != tensors_digest(tensors):
        raise CorruptEntry("checksum mismatch" if expected else "no checksum")
    return tensors


def save_atomic(tensors: Tensors, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the entry whole or not at all, with the checksum of its tensors in its metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=(metadata or {}) | {"sha256": tensors_digest(tensors)})


class ArtifactCache:
    def __init__(self, dir: str | Path, enabled: bool = True):
        self.dir, self.enabled = Path(dir), enabled

    def path(self, name: str, material: dict) -> Path:
        return self.dir / f"{name}-{cache_key(material)}.safetensors"

    def get_or_build(
        self, name: str, material: dict, build: Callable[[], Tensors], label: str | None = None
    ) -> Tensors:
        """The stored tensors for (name, material), building and storing them first if absent or unreadable.
        `label` names the artifact in the log (e.g. its training stage)."""
        if not self.enabled:
            return build()
        path = self.path(name, material)
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            for stale in stale_temporaries(path):  # left by a writer that was killed: nobody else writes it now
                stale.unlink(missing_ok=True)
            if path.exists():
                try:
                    tensors = load_verified(path)
                    log.info("cache hit: %s (%s)", label or name, path.name)
                    return tensors
                except CorruptEntry as e:
                    log.warning("cache entry %s is corrupt (%s): rebuilding it", path, e)
            # the log file's line only: the stage's own line (or its progress bar) follows on the console
            log.info("cache miss: %s: building %s", label or name, path, extra={CONSOLE: False})
            tensors = build()
            save_atomic(tensors, path, metadata={"name": name, "material": json.dumps(material, sort_keys=True)})
            return tensors
