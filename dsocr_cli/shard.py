"""`--shard I/N`: a stable split of the inputs by name, for batches driven by job arrays.

`I/N` counts shards from 0 (0..N-1, as Kubernetes' JOB_COMPLETION_INDEX); `I/A-B` says how the
array is numbered, for arrays that start elsewhere (SLURM's --array=1-8: `$SLURM_ARRAY_TASK_ID/1-8`).

An input belongs to shard `hash(name) mod N`, the name being its path relative to the folder
argument (the same name its outputs get), so every job of an array, run with the same inputs,
agrees on the split without talking to the others, and every input lands in exactly one shard.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .errors import DsocrError


@dataclass(frozen=True)
class Shard:
    index: int   # 0-based, as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX count
    count: int

    def holds(self, name: str) -> bool:
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


def parse_shard(text: str) -> Shard:
    """'I/N' with 0 <= I < N, or 'I/A-B' with A <= I <= B (shard I - A of B - A + 1)."""
    index, slash, span = text.partition("/")
    first, dash, last = span.partition("-")
    numbers = [index, first, last] if dash else [index, first]
    if not (slash and all(_is_number(n) for n in numbers)):
        raise DsocrError(f"--shard {text}: write it as I/N, e.g. 0/4 (I counted from 0), or I/A-B for an "
                         "array numbered A..B, e.g. 1/1-4")
    i, low = int(index), int(first)
    if dash:
        high = int(last)
        if not low <= i <= high:
            raise DsocrError(f"--shard {text}: I must be {low}..{high}")
        return Shard(i - low, high - low + 1)
    if not 0 <= i < low:
        hint = f"; for an array numbered from 1 write {i}/1-{low}" if i == low > 0 else ""
        raise DsocrError(f"--shard {text}: I must be 0..N-1 (shards are counted from 0){hint}")
    return Shard(i, low)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9
