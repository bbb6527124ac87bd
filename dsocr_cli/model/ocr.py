"""DeepSeek-OCR: DeepEncoder (SAM -> CLIP -> projector) feeding a MoE decoder; DeepSeek-OCR-2:
SAM -> DeepEncoder V2 -> projector feeding the same decoder.

Module names reproduce the checkpoint's keys: `model.sam_model`, `model.vision_model` (v1),
`model.qwen2_model` (v2), `model.projector.layers`, `model.image_newline` (v1),
`model.view_seperator` (sic), `model.embed_tokens`, `model.layers`, `model.norm` and `lm_head`.
Both classes offer the same vision calls (encode_views, image_embeddings, embed_image), so the
engine and the plain path run either model without knowing which.
"""
from __future__ import annotations

import torch
from torch import nn

from .blank import Linear, embedding
from .clip import ClipEncoder
from .config import ModelConfig
from .decoder import DecoderLayer, RMSNorm, rope_cos_sin
from .encoder_v2 import DeepEncoderV2
from .sam import SamEncoder


class Projector(nn.Module):
    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.layers = Linear(input_dim, hidden)


class OCRBody(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dec = cfg.decoder
        self.sam_model = SamEncoder(cfg.sam)
        if cfg.encoder is not None:
            self.qwen2_model = DeepEncoderV2(cfg.encoder)
        else:
            self.vision_model = ClipEncoder(cfg.clip)
            self.image_newline = nn.Parameter(torch.zeros(dec.hidden_size))
        self.projector = Projector(cfg.projector_input_dim, dec.hidden_size)
        self.view_seperator = nn.Parameter(torch.zeros(dec.hidden_size))
        self.embed_tokens = embedding(dec.vocab_size, dec.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(dec, i) for i in range(dec.num_hidden_layers))
        self.norm = RMSNorm(dec.hidden_size, dec.rms_norm_eps)


class DeepseekOCR(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = OCRBody(cfg)
        self.lm_head = Linear(cfg.decoder.hidden_size, cfg.decoder.vocab_size, bias=False)

    def for_inference(self) -> "DeepseekOCR":
        """Inference mode for every module and no autograd flags on the weights (nothing is trained)."""
        return self.train(False).requires_grad_(False)

    # ---- vision -------------------------------------------------------------------------------

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S views -> B x g x g x hidden projected features (g = S / 64)."""
        body = self.model
        pixels = pixels.to(body.projector.layers.weight.dtype)
        sam = body.sam_model(pixels)
        clip = body.vision_model(sam)
        features = torch.cat([clip, sam.flatten(2).transpose(1, 2)], dim=-1)  # [CLIP, SAM] per token
        features = body.projector.layers(features)
        g = sam.shape[-1]
        return features.view(pixels.shape[0], g, g, -1)

    def image_embeddings(self, global_view: torch.Tensor, tiles: torch.Tensor | None = None,
                         grid: tuple[int, int] = (1, 1)) -> torch.Tensor:
        """Arrange one image's features as the decoder reads them.

        global_view: g x g x D; tiles: (h_t*w_t) x t x t x D row-major, grid = (w_t, h_t).
        Tiles are stitched into one grid, each row followed by image_newline; then the global
        view, rows each followed by image_newline; then one view_seperator.
        """
        newline = self.model.image_newline
        parts = []
        if tiles is not None:
            w_t, h_t = grid
            t = tiles.shape[1]
            stitched = tiles.view(h_t, w_t, t, t, -1).permute(0, 2, 1, 3, 4).reshape(h_t * t, w_t * t, -1)
            parts.append(_with_newlines(stitched, newline))
        parts.append(_with_newlines(global_view, newline))
        parts.append(self.model.view_seperator[None])
        return torch.cat(parts)

    def embed_image(self, global_view: torch.Tensor, tiles: torch.Tensor | None = None,
                    grid: tuple[int, int] = (1, 1)) -> torch.Tensor:
        """Normalised pixels of one image (3 x S x S, and n x 3 x t x t tiles) -> its vision embeddings."""
        features = self.encode_views(global_view[None])[0]
        tile_features = self.encode_views(tiles) if tiles is not None else None
        return self.image_embeddings(features, tile_features, grid)

    # ---- decoder ------------------------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor | None = None,
              image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the image positions (mask True, in order) replaced by image_embeds."""
        x = self.model.embed_tokens(input_ids)
        if image_embeds is not None:
            x = x.masked_scatter(image_mask[..., None], image_embeds.to(x.dtype))
        return x

    def decode(self, x: torch.Tensor, positions: torch.Tensor, kv) -> torch.Tensor:
        """Run the decoder stack over B x T embeddings at B x T positions; returns final-normed hidden."""
        dec = self.config.decoder
        cos, sin = rope_cos_sin(positions, dec.head_dim, dec.rope_theta, x.dtype, self.config.round_rope_frequencies)
        for layer in self.model.layers:
            x = layer(x, cos, sin, kv)
        return self.model.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()


class DeepseekOCR2(DeepseekOCR):
    """DeepSeek-OCR-2: SAM -> DeepEncoder V2 queries -> projector; no newline vectors."""

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S views (S = 1024 or 768) -> B x N x hidden projected query outputs (N = 256 or 144)."""
        body = self.model
        pixels = pixels.to(body.projector.layers.weight.dtype)
        return body.projector.layers(body.qwen2_model(body.sam_model(pixels)))

    def image_embeddings(self, global_view: torch.Tensor, tiles: torch.Tensor | None = None,
                         grid: tuple[int, int] = (1, 1)) -> torch.Tensor:
        """One image's features as the decoder reads them: every tile's rows (crop order), then the
        global view's, then one view_seperator. global_view: N x D; tiles: k x 144 x D."""
        parts = [tiles.reshape(-1, tiles.shape[-1])] if tiles is not None else []
        return torch.cat(parts + [global_view, self.model.view_seperator[None].to(global_view.dtype)])


def build_model(cfg: ModelConfig) -> DeepseekOCR:
    """The network the config describes (v1 or v2), with uninitialised weights."""
    return DeepseekOCR2(cfg) if cfg.kind == "v2" else DeepseekOCR(cfg)


def _with_newlines(grid: torch.Tensor, newline: torch.Tensor) -> torch.Tensor:
    rows, cols, dim = grid.shape
    return torch.cat([grid, newline.to(grid.dtype).expand(rows, 1, dim)], dim=1).reshape(-1, dim)
