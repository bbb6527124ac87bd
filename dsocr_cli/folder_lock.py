"""One `dsocr convert` at a time per output folder (per shard with --shard: a lock per manifest).

Two runs on one folder would convert the same documents twice and interleave their manifests. The
lock is an advisory flock on a hidden, empty file in the folder, held by the open file: the kernel drops
it when the process ends in any way (SIGKILL included), so a crashed run never blocks the next.
"""
from __future__ import annotations

from pathlib import Path

from .errors import RunFailure

try:
    import fcntl
except ImportError:  # Windows: no lock, as before
    fcntl = None


def lock_folder(folder: Path, name: str = ".dsocr-manifest.jsonl.lock"):
    """Hold the folder's lock for the rest of this process; the open lock file (keep it referenced),
    or None where the folder cannot be made (its documents then fail one by one, with the reason)."""
    if fcntl is None:
        return None
    path = Path(folder) / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(path, "a+")
    except OSError:
        return None
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise RunFailure(f"{folder}: another dsocr convert is writing to this folder; "
                         "wait for it to finish, or choose another -o") from None
    return file
