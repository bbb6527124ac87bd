"""Weights streamed in chunks land exactly where tensor-by-tensor loading puts them."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from dsocr_cli import weight_stream


@pytest.mark.parametrize("chunk, readers", [(1000, 3), (64, 1), (1 << 20, 4)])
def test_chunked_reads_fill_targets_whole_cast_and_in_parts(tmp_path, monkeypatch, chunk, readers):
    monkeypatch.setattr(weight_stream, "CHUNK", chunk)
    monkeypatch.setattr(weight_stream, "READERS", readers)
    g = torch.Generator().manual_seed(0)
    tensors = {"a.bf16": torch.randn(37, 29, generator=g).to(torch.bfloat16),
               "b.f32": torch.randn(513, generator=g),
               "c.fused": torch.randn(3, 8, 5, generator=g).to(torch.bfloat16),
               "d.ids": torch.arange(11, dtype=torch.int64),
               "e.empty": torch.zeros(0),
               "f.unused": torch.randn(300, generator=g)}
    path = tmp_path / "w.safetensors"
    save_file(tensors, path)
    stored = load_file(path)
    same = torch.empty(37, 29, dtype=torch.bfloat16)               # whole, same dtype: read straight in
    cast = torch.empty(513, dtype=torch.bfloat16)                  # whole, cast on the device
    fused = torch.empty(3, 2, 4, 5, dtype=torch.float32)           # one stored tensor split into parts
    ids = torch.empty(11, dtype=torch.int64)
    parts = [("a.bf16", (), same), ("b.f32", (), cast), ("d.ids", (), ids)]
    parts += [("c.fused", (e, slice(4 * h, 4 * h + 4)), fused[e, h]) for e in range(3) for h in range(2)]
    weight_stream.stream_file(path, weight_stream.tensor_offsets(path), parts)
    assert torch.equal(same, stored["a.bf16"])
    assert torch.equal(cast, stored["b.f32"].to(torch.bfloat16))
    assert torch.equal(ids, stored["d.ids"])
    assert torch.equal(fused, stored["c.fused"].float().view(3, 2, 4, 5))


def test_offsets_match_the_header(tmp_path):
    save_file({"x": torch.ones(4, 2), "y": torch.zeros(3, dtype=torch.int32)}, tmp_path / "w.safetensors")
    offsets = weight_stream.tensor_offsets(tmp_path / "w.safetensors")
    start = 8 + int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little")
    dtypes = {k: v[0] for k, v in offsets.items()}
    assert dtypes == {"x": torch.float32, "y": torch.int32}
    assert sorted(v[3] - v[2] for v in offsets.values()) == [12, 32]
    assert min(v[2] for v in offsets.values()) == start
