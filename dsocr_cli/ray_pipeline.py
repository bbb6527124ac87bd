"""`dsocr convert --ray`: the pages of a batch through a Ray Data pipeline, on one host or a cluster.

    page requests -> render each page (CPU tasks) -> an actor pool, one dsocr engine per GPU
    (map_batches with a callable class) -> results streamed back to the command

`RayRunner` offers the Runner interface, so the command assembles, writes and records each
document exactly as with one engine (convert.py), as soon as its last page is in. Ray schedules,
retries and spreads the work; dsocr builds no scheduler of its own. Ray is an optional extra:
this module is only imported for --ray.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import replace
from typing import Iterable, Iterator

from .engine.multi import CPU_WORKERS_ENV
from .engine.spec import EngineSpec
from .errors import DsocrError
from .requests import GenerationSettings, OcrRequest, OcrResult, TokenCallback, page_image

LOCAL = "local"            # bare --ray: start a Ray on this host (or join the one RAY_ADDRESS names)
GPU_BATCH = 256            # pages handed to a GPU engine at once (it batches them continuously)
CPU_BATCH = 4


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs it; a bare ray lacks it)
    except ImportError:
        raise DsocrError("--ray needs Ray: pip install \"dsocr[ray]\"") from None
    return ray


def _render(row: dict) -> dict:
    """CPU task: the page drawn from its reference. A page that cannot be drawn keeps its reference,
    and the engine reports why, as for every other page."""
    request: OcrRequest = pickle.loads(row["request"])
    try:
        request = replace(request, image=page_image(request))
    except Exception:
        pass
    return {"request": pickle.dumps(request)}


class _EngineActor:
    """One engine per actor (per GPU); each batch of pages runs through it continuously batched."""

    def __init__(self, spec: EngineSpec, settings: GenerationSettings | None):
        import torch

        self.engine = spec.build("cuda" if torch.cuda.is_available() else "cpu")
        # the n-gram whitelist is resolved by this engine's tokenizer, whatever the driver sent
        self.settings = settings and replace(settings, ngram_whitelist=self.engine.settings.ngram_whitelist)

    def __call__(self, batch: dict) -> dict:
        requests = [pickle.loads(blob) for blob in batch["request"]]
        return {"result": [pickle.dumps(result) for result in self.engine.run(requests, self.settings)]}


class RayRunner:
    """A Runner (requests.py) over a Ray actor pool."""
    tokenizer = None        # each actor loads its own
    live_requests = False   # the requests are read in full before the pool starts
    devices: list[str] = []  # Ray does not say which actor ran a page
    pages_done: list[int] = []

    def __init__(self, address: str, spec: EngineSpec):
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=None if address == LOCAL else address, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command shows its own
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        self.spec = spec
        self.gpus = int(ray.cluster_resources().get("GPU", 0))
        self.engines = self.gpus or max(1, int(os.environ.get(CPU_WORKERS_ENV, "1")))
        self.settings = GenerationSettings(**spec.settings)

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None) -> Iterator[OcrResult]:
        """Results as the actor pool returns them; `settings` as for Engine.run (the retry's guard)."""
        import ray

        if on_token is not None:
            raise ValueError("streaming tokens needs the engine in this process, not --ray")
        rows = [{"request": pickle.dumps(request)} for request in requests]
        if not rows:
            return
        # With GPUs, unequal resources keep rendering in CPU tasks of its own, off the GPU actors.
        # Without, Ray fuses rendering into the engine actors (the cores are the engines' anyway),
        # and half a CPU each keeps the pool from starving the host.
        engine = {"num_gpus": 1} if self.gpus else {"num_cpus": 0.5}
        pages = ray.data.from_items(rows).map(_render, num_cpus=1 if self.gpus else 0.5)
        results = pages.map_batches(
            _EngineActor, fn_constructor_kwargs={"spec": self.spec, "settings": settings},
            batch_size=GPU_BATCH if self.gpus else CPU_BATCH,
            compute=ray.data.ActorPoolStrategy(size=self.engines), **engine)
        for row in results.iter_rows():
            yield pickle.loads(row["result"])

    def close(self) -> None:
        import ray

        ray.shutdown()
