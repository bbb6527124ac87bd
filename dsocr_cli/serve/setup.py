"""The server's one engine: over a checkpoint as every command loads it, or over random weights (benchmarks)."""
from __future__ import annotations

from ..checkpoint import model_name
from ..engine.engine import Engine
from ..requests import settings_for
from ..runner import load_runner, preprocess_workers
from ..tokenizer import Tokenizer


def open_engine(model: str | None, random_weights: bool, device: str, dtype: str, max_batch: int | None,
                compile: bool, logprobs: bool, kv_dtype: str = "auto", **settings) -> tuple[Engine, Tokenizer, str]:
    """(engine, tokenizer, the model's name for clients); settings: max_new_tokens (the server's cap) and the guard."""
    if not random_weights:
        engine = load_runner(model, device, dtype, logprobs=logprobs, max_batch=max_batch, compile=compile,
                             kv_dtype=kv_dtype, **settings)
        return engine, engine.tokenizer, model_name(model)
    from ..bench import random_weight_model

    net, tokenizer = random_weight_model(device, dtype)
    engine = Engine(net, tokenizer, settings_for(tokenizer, **settings), logprobs=logprobs, max_batch=max_batch,
                    workers=preprocess_workers(net.lm_head.weight.device), compile=compile, kv_dtype=kv_dtype)
    return engine, tokenizer, "random-weights"
