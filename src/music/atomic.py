"""Files that are whole or absent: written beside their destination, flushed to disk, then renamed over it."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process's umask: from /proc (Linux), else by setting it and straight back (which is racy with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path in `path`'s folder to write to; on success it is fsynced and renamed to `path`, on
    failure removed. A reader (or a run after a crash) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp (and writers that recreate the file) make it 0600: give it the mode any new file gets here
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself survives a power loss
        finally:
            os.close(folder)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def unwritable(folder: str | Path) -> str | None:
    """Why the folder `folder` could not be created or written to, or None when it can. Proven by doing it: permission
    bits say nothing to root, nor about /proc, a read-only mount or a full quota. The probe file and any folder made
    only for it are removed again (a run that stops on a bad setting leaves no trace)."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    created = []  # the folders this probe made, to remove again deepest first
    try:
        for missing in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
            try:
                missing.mkdir()
                created.insert(0, missing)
            except FileExistsError:  # another run made it meanwhile: theirs, left alone
                pass
            except OSError as e:
                return f"cannot create {missing}: {e.strerror or e}"
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"cannot write in {folder}: {e.strerror or e}"
    finally:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # no longer empty: another run writes there now
                pass
    return None


def stale_temporaries(path: Path) -> list[Path]:
    """Temporary files a killed writer of `path` left behind (only safe to remove while holding its lock)."""
    return list(path.parent.glob(f".{path.name}.*.tmp"))
