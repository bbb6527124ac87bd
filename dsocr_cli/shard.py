"""`--shard I/N`: a stable split of the inputs by name, for batches driven by job arrays.

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
    """'I/N' with 0 <= I < N."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise DsocrError(f"--shard {text}: write it as I/N, e.g. 0/4 (shards are counted from 0)")
    shard = Shard(int(index), int(count))
    if not 0 <= shard.index < shard.count:
        raise DsocrError(f"--shard {text}: I must be 0..N-1 (shards are counted from 0)")
    return shard
