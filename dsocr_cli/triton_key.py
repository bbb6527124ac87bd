"""Triton's own version hash, remembered across processes.

Before a process's first kernel, Triton hashes its Python sources and its compiled library (about
400 MB) to name its cache entries (`triton.runtime.cache.triton_key`): on an H200 host that was
0.5-1 s of a one-page `ocr` call, repeated by every call. The hash changes only when Triton is
installed anew, which rewrites the library, so it is kept in Triton's cache folder under a name
made of Triton's version and the library's path, size and modification time. The value is the one
Triton computes, so its kernel cache hits as before; Triton's own test helpers replace the
function the same way.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def _cache_folder(triton) -> Path:
    knobs = getattr(triton, "knobs", None)
    folder = getattr(getattr(knobs, "cache", None), "dir", None)
    return Path(folder or os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def remember_triton_key() -> None:
    """Make Triton read its version hash from disk when its files have not changed (no-op without
    Triton, or when Triton no longer has the function)."""
    try:
        import triton
        from triton.runtime import cache
    except ImportError:
        return
    computed = getattr(cache, "triton_key", None)
    if computed is None or getattr(computed, "remembered", False):
        return

    @functools.lru_cache(maxsize=None)
    def triton_key() -> str:
        library = next(iter(sorted((Path(triton.__file__).parent / "_C").glob("libtriton*"))), None)
        if library is None:
            return computed()
        stat = library.stat()
        stamp = f"{triton.__version__}|{library}|{stat.st_size}|{stat.st_mtime_ns}"
        memo = _cache_folder(triton) / f"dsocr-triton-key-{hashlib.sha256(stamp.encode()).hexdigest()[:32]}"
        try:
            return memo.read_text(encoding="utf-8")
        except OSError:
            pass
        value = computed()
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            partial = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
            partial.write_text(value, encoding="utf-8")
            partial.replace(memo)
        except OSError:  # a read-only cache: the hash is computed each time, as without us
            pass
        return value

    triton_key.remembered = True
    cache.triton_key = triton_key
