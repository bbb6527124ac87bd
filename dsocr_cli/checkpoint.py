"""Find, check and load a checkpoint in the official DeepSeek-OCR or DeepSeek-OCR-2 layout
(or DeepSeek-OCR-2's native transformers layout, mapped name by name to the official one).

A checkpoint is a folder with config.json, tokenizer.json and safetensors weights (one file or
shards listed by model.safetensors.index.json), or a Hugging Face repo id fetched into the hub
cache (config, tokenizer and safetensors only: never Python code). Weights are streamed file by
file (weight_stream.py) into a model built on the meta device, so it is never materialised
twice; each tensor keeps the dtype its safetensors header gives until it is cast into the model's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from .errors import DsocrError
from .model.config import ConfigError, ModelConfig
from .model.native import official_parts
from .tokenizer import Tokenizer

if TYPE_CHECKING:  # torch and the model load with the weights: reading a config needs neither
    import torch

    from .model.ocr import DeepseekOCR

DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"
V2_MODEL = "deepseek-ai/DeepSeek-OCR-2"
BUNDLED_CONFIGS = {DEFAULT_MODEL: "config.json", V2_MODEL: "ocr2-config.json"}
HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "processor_config.json", "model.safetensors.index.json", "*.safetensors"]
HINT = "set DSOCR_MODEL or pass --model PATH to a folder in the official layout"


class CheckpointError(DsocrError):
    """A checkpoint problem, worded for the user (one line, with what to do)."""


class FetchError(CheckpointError):
    """The hub could not be reached or refused: a failure while running, not a usage error."""

    exit_code = 1


def resolve(model: str | None = None) -> Path:
    """--model / $DSOCR_MODEL / the default repo id -> a local folder (downloading if needed)."""
    name = model_name(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    _check_repo_id(name)
    return _download(name)


def model_name(model: str | None) -> str:
    return model or os.environ.get("DSOCR_MODEL") or DEFAULT_MODEL


def _check_repo_id(name: str) -> None:
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise CheckpointError(f"model folder not found: {name} ({HINT})")


def official_config(repo: str = DEFAULT_MODEL) -> dict:
    """A released config.json (v1's or v2's), shipped with dsocr (byte-identical to the hub's)."""
    return json.loads((files("dsocr_cli.assets") / BUNDLED_CONFIGS[repo]).read_text(encoding="utf-8"))


def resolve_config(model: str | None = None) -> tuple[ModelConfig, str]:
    """The model's config without fetching its weights: (config, where it came from)."""
    name = model_name(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return read_config(path), name
    if name in BUNDLED_CONFIGS:
        return ModelConfig.from_dict(official_config(name)), f"{name} (bundled config.json)"
    _check_repo_id(name)
    from huggingface_hub import hf_hub_download

    try:
        return read_config(Path(hf_hub_download(name, "config.json")).parent), name
    except CheckpointError:
        raise
    except Exception as exc:
        raise FetchError(f"could not fetch {name}/config.json ({type(exc).__name__}); {HINT}") from None


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:  # network, auth, offline cache miss: all end the same way for the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FetchError(f"could not fetch {repo_id} from the Hugging Face hub ({reason}); {HINT}") from None


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no config.json ({HINT})")
    try:
        return ModelConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ConfigError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: {_one_line(exc)}") from None


def load_tokenizer(folder: Path) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has no tokenizer.json ({HINT})")
    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # the tokenizers library raises a bare Exception for a damaged file
        raise CheckpointError(f"{path} cannot be read ({_one_line(exc)}): it may be truncated; re-download it") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:160] + "…"


def _open_weights(path: Path):
    """safe_open (for names and shapes), with a damaged or truncated file as one line that says what to do."""
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({_one_line(exc)}): "
                              "it may be truncated; re-download it") from None


@dataclass(frozen=True)
class Slot:
    """Where one checkpoint tensor goes: our parameter `param`, at `index` within it."""
    param: str
    index: tuple


def checkpoint_layout(model: torch.nn.Module) -> dict[str, Slot]:
    """Official key -> slot in our model. Modules that fuse weights declare it in checkpoint_parts()."""
    layout = {}
    claimed = set()
    for prefix, module in model.named_modules():
        parts = module.checkpoint_parts() if hasattr(module, "checkpoint_parts") else {}
        for local, sources in parts.items():
            param = f"{prefix}.{local}"
            claimed.add(param)
            for suffix, index in sources:
                layout[f"{prefix}.{suffix}"] = Slot(param, index)
    for name, _ in model.named_parameters():
        if name not in claimed:
            layout[name] = Slot(name, ())
    return layout


def official_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Official key -> tensor shape implied by the model (works on the meta device)."""
    params = dict(model.named_parameters())
    return {key: tuple(params[slot.param][slot.index].shape) for key, slot in checkpoint_layout(model).items()}


def weight_files(folder: Path) -> dict[str, Path]:
    """Stored key -> the safetensors file holding it."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = {name: folder / name for name in set(weight_map.values())}
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise CheckpointError(f"{index} is not a safetensors index ({_one_line(exc)}); re-download it") from None
        if any(Path(name).name != name for name in files):
            raise CheckpointError(f"{index} names a weights file outside {folder}")
        missing = sorted(name for name, f in files.items() if not f.is_file())
        if missing:
            raise CheckpointError(f"{folder} is incomplete: missing {', '.join(missing)} (re-download it; {HINT})")
        return {key: files[name] for key, name in weight_map.items()}
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{folder} has no .safetensors weights ({HINT})")
    keys = {}
    for shard in shards:
        with _open_weights(shard) as f:
            keys.update({k: shard for k in f.keys()})
    return keys


def build_empty(config: ModelConfig) -> DeepseekOCR:
    """The model on the meta device: shapes and names, no memory."""
    import torch

    from .model.ocr import build_model

    with torch.device("meta"):
        return build_model(config)


def build_on(config: ModelConfig, device: torch.device | str, dtype: torch.dtype) -> DeepseekOCR:
    """The model with uninitialised weights on `device`, floating ones in `dtype`."""
    return allocate(build_empty(config), device, dtype)


def allocate(module: torch.nn.Module, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """A meta-device module's tensors allocated (uninitialised) on `device`, floating ones in `dtype`,
    each for itself. (Module.to_empty goes through torch's Python reference of empty_like, which
    imports sympy: seconds of every start.)"""
    import torch

    def fresh(t: torch.Tensor) -> torch.Tensor:
        return torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device=device)

    for part in module.modules():
        for name, t in list(part.named_parameters(recurse=False)):
            part.register_parameter(name, torch.nn.Parameter(fresh(t), requires_grad=t.requires_grad))
        for name, t in list(part.named_buffers(recurse=False)):
            part.register_buffer(name, fresh(t), persistent=name not in part._non_persistent_buffers_set)
    return module


@dataclass(frozen=True)
class Source:
    """Where one official tensor is stored: file, stored key, index into the stored tensor."""
    path: Path
    key: str
    index: tuple


def weight_sources(folder: Path) -> dict[str, Source]:
    """Official key -> its source. Native names (and fused experts) are mapped to official ones."""
    sources = {}
    for path, keys in _by_file(weight_files(folder)).items():
        with _open_weights(path) as f:
            for key in keys:
                for name, index in official_parts(key, lambda: tuple(f.get_slice(key).get_shape())):
                    sources[name] = Source(path, key, index)
    return sources


def _by_file(files: dict[str, Path]) -> dict[Path, list[str]]:
    by_file: dict[Path, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    return by_file


def load_model(folder: Path, device: torch.device, dtype: torch.dtype) -> DeepseekOCR:
    """Build the model from folder/config.json and fill it from the safetensors weights."""
    import torch

    from .weight_stream import stream_file, tensor_offsets

    if dtype == torch.float32:  # fp32 is the exactness mode: no TF32 shortcuts in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = build_on(read_config(folder), device, dtype)
    layout = checkpoint_layout(model)
    sources = weight_sources(folder)
    missing = [k for k in layout if k not in sources]
    if missing:
        raise CheckpointError(f"{folder} lacks {len(missing)} of {len(layout)} weights "
                              f"(first: {missing[0]}); it is partial or not a DeepSeek-OCR checkpoint")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for path, keys in _by_file({key: sources[key].path for key in layout}).items():
            stored = tensor_offsets(path)
            parts = []
            for key in keys:
                slot, source = layout[key], sources[key]
                target = params[slot.param][slot.index]
                shape = tuple(torch.empty(stored[source.key][1], device="meta")[source.index].shape)
                if shape != tuple(target.shape):
                    raise CheckpointError(f"{key} has shape {shape}, config.json implies "
                                          f"{tuple(target.shape)}: config and weights do not match")
                parts.append((source.key, source.index, target))  # the stored dtype is per tensor (v2 mixes them)
            stream_file(path, stored, parts)
    return model.for_inference()

