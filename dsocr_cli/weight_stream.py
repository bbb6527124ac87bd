"""Safetensors weights streamed into a model's parameters in large sequential reads.

Reading tensor by tensor through safetensors' memory map costs a page fault per 4 KiB and, for a
GPU, a copy from pageable memory that the driver bounces through its own buffer. Here each file's
data region is read in CHUNK-sized pieces by a few threads (the reads release the GIL) into
page-locked buffers, and each piece is copied to the device asynchronously while the next ones are
read: loading is bounded by the page cache copy, not by faults. A stored tensor that is its target
whole, in the target's dtype, lands in the target's own memory; any other (a cast, a fused tensor
split into parts) lands in a staging tensor on the device and is cast or sliced there.

The header has been validated by safetensors (safe_open) before this reads it again for offsets.
"""
from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

CHUNK = 8 * 1024 ** 2    # bytes per read and per host-to-device copy
READERS = 8              # reads in flight (threads, and page-locked buffers): 24 GB/s on the H200 host

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass
class Stored:
    """One stored tensor: where its bytes are in the file, and the targets it fills."""
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int                    # file offsets of its bytes
    end: int
    parts: list[tuple[tuple, torch.Tensor]] = field(default_factory=list)  # (index into it, target)
    landing: torch.Tensor | None = None  # uint8 device memory its bytes are copied into

    def direct(self) -> bool:
        """Its bytes can go straight into the one target (same dtype, whole, contiguous)."""
        if len(self.parts) != 1:
            return False
        index, target = self.parts[0]
        return index == () and target.dtype == self.dtype and target.is_contiguous()

    def land(self) -> None:
        if self.direct():
            self.landing = self.parts[0][1].view(-1).view(torch.uint8)
        else:
            self.landing = torch.empty(self.end - self.begin, dtype=torch.uint8, device=self.parts[0][1].device)

    def finish(self) -> None:
        """All bytes are in: cast or slice the staged tensor into its targets (stream-ordered)."""
        if not self.direct():
            whole = self.landing.view(self.dtype).view(self.shape)
            for index, target in self.parts:
                target.copy_(whole[index] if index else whole)
        self.landing = None


Offsets = dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]


def tensor_offsets(path: Path) -> Offsets:
    """Stored key -> (dtype, shape, begin, end), begin and end as offsets in the file."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    start = 8 + size
    return {key: (DTYPES[entry["dtype"]], tuple(entry["shape"]), start + entry["data_offsets"][0],
                  start + entry["data_offsets"][1])
            for key, entry in header.items() if key != "__metadata__"}


def stream_file(path: Path, offsets: Offsets, parts: list[tuple[str, tuple, torch.Tensor]]) -> None:
    """Fill targets from one file (its tensor_offsets): parts are (stored key, index into the stored
    tensor, target), their shapes already checked against the header's (the loader does)."""
    stored: dict[str, Stored] = {}
    for key, index, target in parts:
        if key not in stored:
            stored[key] = Stored(*offsets[key])
        stored[key].parts.append((index, target))
    order = sorted(stored.values(), key=lambda s: s.begin)
    order = [s for s in order if s.end > s.begin]
    if not order:
        return
    device = order[0].parts[0][1].device
    if device.type == "cuda":  # the events and the copies' stream belong to the targets' device
        with torch.cuda.device(device):
            return _stream(path, order, device)
    return _stream(path, order, device)


def _stream(path: Path, order: list[Stored], device: torch.device) -> None:
    """Pieces read ahead into the buffers by the readers; each piece copied out to the tensors it
    overlaps, a buffer refilled once its copies have reached the device."""
    pinned = device.type == "cuda"
    begin, end = order[0].begin, max(s.end for s in order)
    pieces = [(at, min(at + CHUNK, end)) for at in range(begin, end, CHUNK)]
    buffers = [torch.empty(CHUNK, dtype=torch.uint8, pin_memory=pinned) for _ in range(min(READERS, len(pieces)))]
    copied = [torch.cuda.Event() if pinned else None for _ in buffers]  # a buffer's last copies queued
    with ThreadPoolExecutor(len(buffers)) as readers:
        def read(i: int) -> None:
            slot = i % len(buffers)
            if copied[slot] is not None:
                copied[slot].synchronize()  # its previous piece has reached the device
            at, stop = pieces[i]
            view = memoryview(buffers[slot].numpy())[:stop - at]
            with open(path, "rb", buffering=0) as f:  # a file object per read: threads never share one
                f.seek(at)
                while view:  # a read may return fewer bytes than asked
                    n = f.readinto(view)
                    if not n:
                        raise OSError(f"{path} ended early at byte {at}")
                    view, at = view[n:], at + n

        reads = {i: readers.submit(read, i) for i in range(len(buffers))}
        nxt = 0  # first stored tensor not yet wholly copied
        for i, (at, stop) in enumerate(pieces):
            reads.pop(i).result()
            buffer = buffers[i % len(buffers)]
            for s in order[nxt:]:
                if s.begin >= stop:
                    break
                if s.landing is None:
                    s.land()
                lo, hi = max(s.begin, at), min(s.end, stop)
                s.landing[lo - s.begin:hi - s.begin].copy_(buffer[lo - at:hi - at], non_blocking=pinned)
            while nxt < len(order) and order[nxt].end <= stop:
                order[nxt].finish()
                nxt += 1
            if pinned:
                copied[i % len(buffers)].record()
            if i + len(buffers) < len(pieces):
                reads[i + len(buffers)] = readers.submit(read, i + len(buffers))
        if pinned:
            torch.cuda.current_stream(device).synchronize()  # the buffers are freed on return
