"""The checkpoint's byte-level BPE tokenizer (tokenizer.json), through Hugging Face `tokenizers`.

Text is encoded without special tokens (BOS is added by the prompt builder); the special
markers the model emits (`<|ref|>`, `<td>`, ...) are added tokens and encode as single ids.
"""
from __future__ import annotations

import gzip
from importlib.resources import files
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

EOS_TEXT = "<｜end▁of▁sentence｜>"


class Tokenizer:
    def __init__(self, tok: _HFTokenizer):
        self._tok = tok

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        return cls(_HFTokenizer.from_file(str(path)))

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        return cls(_HFTokenizer.from_str(text))

    def to_json(self) -> str:
        """tokenizer.json's text: what a server hands its clients (dsocr serve)."""
        return self._tok.to_str()

    @classmethod
    def bundled(cls) -> "Tokenizer":
        """The released tokenizer, shipped with dsocr: token counts need no model download."""
        data = (files("dsocr_cli.assets") / "tokenizer.json.gz").read_bytes()
        return cls(_HFTokenizer.from_str(gzip.decompress(data).decode("utf-8")))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_id(self, text: str) -> int | None:
        return self._tok.token_to_id(text)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)
