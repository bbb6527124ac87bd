"""Loading the model and engine imports no torch._dynamo (seconds a call);
a compile wraps the marked functions where they are defined."""
from __future__ import annotations

import subprocess
import sys

from dsocr_cli.model import eager


def test_loading_model_and_engine_imports_no_dynamo_or_sympy(tiny_checkpoint):
    """Importing them, building both models on the meta device as every load does first, and
    loading a checkpoint (its tensors allocated on a device)."""
    code = ("import sys, torch, dsocr_cli.runner, dsocr_cli.engine.engine, dsocr_cli.engine.paged_kv; "
            "from dsocr_cli.checkpoint import V2_MODEL, ModelConfig, build_empty, load_model, official_config; "
            "[build_empty(ModelConfig.from_dict(official_config(*name))) for name in ((), (V2_MODEL,))]; "
            f"load_model(__import__('pathlib').Path({str(tiny_checkpoint)!r}), torch.device('cpu'), torch.bfloat16); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy', 'torch._inductor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stderr


class Holder:
    @eager.eager_under_compile
    def method(self, x):
        return x + 1


@eager.eager_under_compile
def function(x):
    return x * 2


def test_disable_marked_wraps_functions_and_methods_in_place(monkeypatch):
    monkeypatch.setattr(eager, "_marked", [Holder.__dict__["method"], function])
    plain_method, plain_function = Holder.__dict__["method"], function
    eager.disable_marked()
    this = sys.modules[__name__]
    assert Holder.__dict__["method"] is not plain_method and this.function is not plain_function
    assert Holder().method(1) == 2 and this.function(3) == 6
    monkeypatch.setattr(this, "function", plain_function)
    monkeypatch.setattr(Holder, "method", plain_method)
