"""Layers whose values only ever come from a checkpoint (or randomize_): built without drawing any.

Every model is built on the meta device before its weights are loaded, and there torch's default
initialisation is pure cost. nn.Embedding's normal_ imports torch._dynamo on the meta device (1.4 s
on a 2-core CPU); nn.Linear's and nn.Conv2d's kaiming_uniform_ runs 400 times for the full model
(building it took 0.178 s with them on a 2-core CPU, 0.149 s without), paid by every command that
loads a model.
Same classes and parameter names (`weight`, `bias`) as torch's, so checkpoint keys are unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


def embedding(rows: int, dim: int) -> nn.Embedding:
    """An uninitialised rows x dim nn.Embedding (given its table, nn.Embedding skips the draw)."""
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class Linear(nn.Linear):
    def reset_parameters(self) -> None:
        """Nothing to draw: the weights are loaded."""


class Conv2d(nn.Conv2d):
    def reset_parameters(self) -> None:
        """Nothing to draw: the weights are loaded."""
