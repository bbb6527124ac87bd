"""Embedding tables whose values only ever come from a checkpoint (or randomize_).

nn.Embedding draws its initial weights with normal_, and on the meta device (where every model is
built before its weights are loaded) normal_ imports torch._dynamo: 1.4 s on a 2-core CPU, more on
the GPU machine, paid by every command that loads a model. Given its table, nn.Embedding skips
that draw.
"""
from __future__ import annotations

import torch
from torch import nn


def embedding(rows: int, dim: int) -> nn.Embedding:
    """An uninitialised rows x dim nn.Embedding (same parameter name, `weight`, as the checkpoint's)."""
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))
