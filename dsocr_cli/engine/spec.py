"""How to build an engine in another process (a --gpus worker, a Ray actor): picklable, so it travels."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..requests import OcrRequest, settings_for
from .engine import Engine


@dataclass(frozen=True)
class EngineSpec:
    """How each worker builds its engine: `load(device)` gives (model, tokenizer); picklable."""
    load: Callable[[str], tuple]
    settings: dict = field(default_factory=dict)  # generation settings (settings_for's overrides)
    max_batch: int | None = None
    workers: int = 0                              # preprocessing processes per engine
    warm_up: Callable[[], Iterable[OcrRequest]] | None = None  # run once per engine before it is ready
    compile: bool = False                         # decode steps through torch.compile (Engine)
    kv_dtype: str = "auto"                        # the KV cache's element type (Engine)

    def build(self, device: str) -> Engine:
        """The engine on `device`, warmed up: kernels compiled and workers started before any timing."""
        model, tokenizer = self.load(device)
        engine = Engine(model, tokenizer, settings_for(tokenizer, **self.settings), max_batch=self.max_batch,
                        workers=self.workers, compile=self.compile, kv_dtype=self.kv_dtype)
        if self.warm_up is not None:
            for _ in engine.run(self.warm_up()):
                pass
        return engine
