"""`dsocr info` without torch: parameter counts from the config equal a meta-device model's, and
the GPU name comes from the NVIDIA driver's information files."""
from __future__ import annotations

import pytest

from conftest import tiny_config, tiny_v2_config
from dsocr_cli.checkpoint import V2_MODEL, build_empty, official_config
from dsocr_cli.gpu_name import first_visible_gpu
from dsocr_cli.model.config import ModelConfig
from dsocr_cli.model.sizes import parameter_counts


def meta_counts(config: ModelConfig) -> dict[str, int]:
    """The counts read off the network itself, built on the meta device (the reference)."""
    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    net = build_empty(config)
    body, dec = net.model, config.decoder
    decoder = count(body.layers) + count(body.norm) + count(net.lm_head)
    unused = sum(count(layer.mlp.experts) * (dec.n_routed_experts - dec.num_experts_per_tok) // dec.n_routed_experts
                 for i, layer in enumerate(body.layers) if dec.is_moe_layer(i))
    vision = ({"deepencoder_v2": count(body.qwen2_model)} if config.kind == "v2"
              else {"clip": count(body.vision_model)})
    newline = 0 if config.kind == "v2" else body.image_newline.numel()
    return {"total": count(net), "sam": count(body.sam_model), **vision,
            "projector": count(body.projector) + newline + body.view_seperator.numel(),
            "embedding": count(body.embed_tokens), "decoder": decoder, "active_per_token": decoder - unused}


@pytest.mark.parametrize("make", [official_config, lambda: official_config(V2_MODEL), tiny_config, tiny_v2_config],
                         ids=["v1", "v2", "tiny-v1", "tiny-v2"])
def test_counts_from_the_config_equal_the_meta_models(make):
    config = ModelConfig.from_dict(make())
    counts = parameter_counts(config)
    assert counts == meta_counts(config) and list(counts) == list(meta_counts(config))


def test_the_released_counts():
    assert parameter_counts(ModelConfig.from_dict(official_config()))["total"] == 3_336_106_240
    assert parameter_counts(ModelConfig.from_dict(official_config(V2_MODEL)))["total"] == 3_389_119_360


def information(model: str, uuid: str, bus: str) -> str:
    """A driver information file as /proc/driver/nvidia/gpus/BUS/information has it."""
    return (f"Model: \t\t {model}\nIRQ:   \t\t 0\nGPU UUID: \t {uuid}\nVideo BIOS: \t 96.00.74.00.01\n"
            f"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus}\n"
            "Device Minor: \t 0\nGPU Excluded:\t No\n")


GPUS = [information("NVIDIA H200", "GPU-1111aaaa-0000-0000-0000-000000000000", "0000:18:00.0"),
        information("NVIDIA A100-SXM4-80GB", "GPU-2222bbbb-0000-0000-0000-000000000000", "0000:2a:00.0")]


@pytest.mark.parametrize("visible, name", [
    (None, "NVIDIA H200"), ("0", "NVIDIA H200"), ("1", "NVIDIA A100-SXM4-80GB"), ("1,0", "NVIDIA A100-SXM4-80GB"),
    (" 1 ", "NVIDIA A100-SXM4-80GB"), ("2", None), ("-1", None), ("", None),
    ("GPU-2222bbbb", "NVIDIA A100-SXM4-80GB"), ("GPU-3333", None), ("nonsense", None),
])
def test_the_first_visible_gpu_follows_cuda_visible_devices(visible, name):
    assert first_visible_gpu(GPUS, visible) == name


def test_no_driver_files_mean_no_gpu():
    assert first_visible_gpu([], None) is None and first_visible_gpu([], "0") is None
