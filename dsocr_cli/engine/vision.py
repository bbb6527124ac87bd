"""Vision for a group of admitted pages: every view of one size in a few large batches.

Views arrive as uint8 CPU tensors from the workers; each batch of them is gathered in page-locked
memory and copied to the device asynchronously (`_staged`). Batches come in power-of-two sizes
(full chunks of about VISION_PIXELS, then the remainder in binary parts) and, on CUDA, each (side,
size) met a second time is replayed from a CUDA graph: an encoder pass is about 1,000 kernels, and launching
them from a host shared with the workers cost as much as running them. A shape met once (a single
page) runs eager: capturing costs a warm-up pass and a capture, more than the one pass it saves.
The graphs share one memory pool (they never run at once) and their outputs are copied out.

On CUDA a group's vision runs on a stream of its own (`start`), so the engine keeps decoding the
running pages while the next group is encoded: vision is bound by arithmetic and decode by memory,
and run one after the other the GPU idled on either in turn.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..model.ocr import DeepseekOCR
from ..preprocess import ImageInput, normalize

VISION_PIXELS = 8 * 1024 ** 2  # pixels per vision batch (SAM's global attention grows with N^2)


def batch_sizes(n: int, side: int) -> list[int]:
    """n views of `side` pixels as full power-of-two chunks, then the rest in binary parts."""
    chunk = 1 << max(0, (VISION_PIXELS // (side * side)).bit_length() - 1)
    sizes = [chunk] * (n // chunk)
    rest = n % chunk
    sizes += [1 << bit for bit in range(rest.bit_length() - 1, -1, -1) if rest >> bit & 1]
    return sizes


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    pixels: torch.Tensor    # static input, uint8, n x 3 x S x S
    features: torch.Tensor  # static output, n x g x g x hidden


@dataclass
class VisionJob:
    """A group's embeddings, maybe still being computed on the vision stream (`done` not yet reached)."""
    embeds: list[torch.Tensor]
    device: torch.device
    begin: torch.cuda.Event | None = None
    done: torch.cuda.Event | None = None
    host_seconds: float = 0.0
    taken: bool = False     # the current stream waits for it already
    counted: bool = False   # its seconds are in the engine's stats

    def ready(self) -> bool:
        return self.done is None or self.done.query()

    def take(self) -> list[torch.Tensor]:
        """The embeddings, safe to read on the current stream (which waits for the vision stream)."""
        if self.done is not None and not self.taken:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(self.done)
            for e in self.embeds:
                e.record_stream(stream)  # their memory is not reused by the vision stream while in use here
        self.taken = True
        return self.embeds

    def seconds(self) -> float:
        """Device seconds the group's vision took, the first time it is asked (once its results have
        been read); 0 after."""
        if self.counted:
            return 0.0
        self.counted = True
        return self.host_seconds if self.done is None else self.begin.elapsed_time(self.done) / 1000


class VisionEncoder:
    def __init__(self, model: DeepseekOCR, graphs: bool):
        self.model = model
        self.device = model.lm_head.weight.device
        self.use_graphs = graphs and self.device.type == "cuda"
        self.captured: dict[tuple, _Captured] = {}
        self.met: set[tuple] = set()  # (shape, size) keys run once: captured when met again
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        # High priority: the GPU's scheduler starts vision blocks ahead of decode's queued ones, so
        # new pages are encoded while the batch decodes instead of after (gundam on an H200, one
        # call: 21.1 pages/s against 17.3 at the default priority)
        self.stream = torch.cuda.Stream(self.device, priority=-1) if self.device.type == "cuda" else None
        self.capture_stream = torch.cuda.Stream(self.device) if self.use_graphs else None

    def start(self, images: list[ImageInput]) -> VisionJob:
        """Begin the images' embeddings: queued on the vision stream on CUDA, computed now elsewhere."""
        if self.stream is None:
            start = time.perf_counter()
            return VisionJob(self.embeddings(images), self.device, host_seconds=time.perf_counter() - start)
        begin, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self.stream):
            begin.record()
            embeds = self.embeddings(images)
            done.record()
        return VisionJob(embeds, self.device, begin, done)

    def embeddings(self, images: list[ImageInput]) -> list[torch.Tensor]:
        """Each image's vision embeddings, laid out as the decoder reads them."""
        by_side: dict[int, list[int]] = {}
        for i, image in enumerate(images):
            by_side.setdefault(image.global_view.shape[-1], []).append(i)
        global_features: dict[int, torch.Tensor] = {}
        for members in by_side.values():
            global_features.update(zip(members, self.encode([images[i].global_view for i in members])))
        tiles = [t for image in images if image.tiles is not None for t in image.tiles]
        tile_features = iter(self.encode(tiles) if tiles else [])
        out = []
        for i, image in enumerate(images):
            own = None
            if image.tiles is not None:
                own = torch.stack([next(tile_features) for _ in range(image.tiles.shape[0])])
            out.append(self.model.image_embeddings(global_features[i], own, image.grid))
        return out

    def encode(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Projected features (g x g x hidden) of views that all have one size."""
        feats: list[torch.Tensor] = []
        start = 0
        for size in batch_sizes(len(views), views[0].shape[-1]):
            feats.extend(self._run(views[start:start + size]))
            start += size
        return feats

    def _run(self, views: list[torch.Tensor]) -> torch.Tensor:
        key = (tuple(views[0].shape), len(views))
        captured = self.captured.get(key)
        if captured is None and self.use_graphs and key in self.met:
            captured = self._capture(*key)
        self.met.add(key)
        staged = self._staged(views)
        if captured is None:
            return self.model.encode_views(normalize(staged.to(self.device, non_blocking=True)))
        captured.pixels.copy_(staged, non_blocking=True)
        captured.graph.replay()
        return captured.features.clone()

    def _staged(self, views: list[torch.Tensor]) -> torch.Tensor:
        """The views in one host batch; on CUDA in page-locked memory, so that the copy to the device
        runs asynchronously on the vision stream. From pageable memory each copy held the host at
        about 0.5 GB/s on the H200's host: 0.2 s for 35 base pages, 20 s of a 1,024-page gundam run,
        with no decode step launched meanwhile. The views are copied in by numpy (one thread: a
        torch copy of this size would start the OpenMP team that the busy workers starve). Torch's
        pinned-memory cache takes the buffer back only once the copy that reads it is done."""
        if self.stream is None:
            return torch.stack(views)
        batch = torch.empty((len(views), *views[0].shape), dtype=torch.uint8, pin_memory=True)
        host = batch.numpy()
        for i, view in enumerate(views):
            np.copyto(host[i], view.numpy())
        return batch

    def _capture(self, shape: tuple, n: int) -> _Captured:
        pixels = torch.full((n, *shape), 255, dtype=torch.uint8, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.model.encode_views(normalize(pixels))  # warm-up: kernels chosen, caches filled, outside the capture
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # captured on a stream of its own: cuBLAS keeps a workspace per stream, and these graphs replay
        # beside the decode graphs (captured on torch's default capture stream)
        with torch.cuda.graph(graph, pool=self.pool, stream=self.capture_stream):
            features = self.model.encode_views(normalize(pixels))
        captured = self.captured[(shape, n)] = _Captured(graph, pixels, features)
        return captured
