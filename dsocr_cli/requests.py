"""Requests in, results out: the seam between the document pipeline and whatever runs the model.

The bottom of the package: the engine, the loader (runner.py), the pipelines and the CLI all
speak these types, and this module imports none of them (nor torch), so any of them may depend
on it. A `Runner` is anything that turns requests into results: the batched engine, the plain
reference path, engines on several GPUs, a Ray pool, a resident server.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol

from .errors import DsocrError
from .tokenizer import EOS_TEXT, Tokenizer

if TYPE_CHECKING:
    from PIL import Image

    from .preprocess import Mode

NGRAM_WHITELIST = ("<td>", "</td>")  # table cells repeat by nature: never banned by the n-gram guard
# A page that stopped without EOS runs once more under a stronger guard: n-grams of 20 tokens may
# not repeat within 256 (the default guard: 30 within 90).
RETRY_NGRAM_SIZE = 20
RETRY_NGRAM_WINDOW = 256

# A request iterator may yield PENDING: nothing to run yet, ask again once a result is out (the
# results still to come may add requests: retries, or pages another process hands out).
PENDING = object()


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 8192
    ngram_size: int = 30          # 0 turns the guard off
    ngram_window: int = 90
    ngram_whitelist: frozenset[int] = frozenset()  # token ids never banned (<td>, </td>)
    loop_span: int = 512          # stop as `repetition` when this many tokens repeat a block of
    #                               at most loop_span // 4 tokens; 0 turns it off
    ignore_eos: bool = False      # benchmarks: every page runs to max_new_tokens

    def __post_init__(self):
        if self.ngram_size > 0 and self.ngram_window < self.ngram_size:
            raise DsocrError(f"--ngram-window {self.ngram_window} is shorter than --ngram-size {self.ngram_size}: "
                             "the window must hold a whole n-gram (or use --ngram-size 0 to turn the guard off)")
        if self.max_new_tokens < 1:
            raise DsocrError(f"--max-new-tokens {self.max_new_tokens}: give at least 1")


@dataclass(frozen=True)
class OcrRequest:
    image: Image.Image | Callable[[], Image.Image]  # RGB page, or a picklable callable producing it
    prompt: str
    mode: Mode
    key: object = None       # the caller's tag, returned with the result
    max_new_tokens: int | None = None  # fewer tokens than the runner's limit, for this request alone
    retry: bool = False      # a second attempt: runs under stronger_guard(the run's settings)


@dataclass
class OcrResult:
    key: object
    text: str                # decoded with special tokens and grounding tags, trailing EOS removed
    token_ids: list[int]     # generated ids (EOS included when generated)
    finish_reason: str       # eos | length | repetition
    prompt_tokens: int
    vision_tokens: int
    token_logprobs: list[float] | None = None
    error: str | None = None  # set when the request could not be run at all (finish_reason "error")
    page_size: tuple[int, int] | None = None  # the page image's (width, height), when it could be read


TokenCallback = Callable[[object, int], None]  # on_token(request key, token id)


def stronger_guard(settings: GenerationSettings) -> GenerationSettings:
    size = min(settings.ngram_size, RETRY_NGRAM_SIZE) if settings.ngram_size else RETRY_NGRAM_SIZE
    return replace(settings, ngram_size=size, ngram_window=max(settings.ngram_window, RETRY_NGRAM_WINDOW))


def settings_of(request: OcrRequest, settings: GenerationSettings) -> GenerationSettings:
    """What one request runs under, given its run's settings: the retry guard, its own token limit."""
    if request.retry:
        settings = stronger_guard(settings)
    if request.max_new_tokens is not None and request.max_new_tokens < settings.max_new_tokens:
        settings = replace(settings, max_new_tokens=request.max_new_tokens)
    return settings


class Runner(Protocol):
    settings: GenerationSettings   # what a run uses when it is given none
    tokenizer: Tokenizer | None    # the model's, when it is loaded in this process (streaming needs it)
    engines: int                   # engines working in parallel (a pass should keep them all busy)
    devices: list[str]             # per engine whose progress is known, its device; [] when not known
    pages_done: list[int]          # pages finished per entry of `devices`
    live_requests: bool            # run() takes PENDING from its requests and asks again after a result

    def run(self, requests: Iterable[OcrRequest], settings: GenerationSettings | None = None,
            on_token: TokenCallback | None = None) -> Iterator[OcrResult]:
        """Results carry their request's key; a batched runner may yield them out of order. Each
        request runs under settings_of(request, `settings`); `settings` (same max_new_tokens or
        fewer) apply to this run only; `on_token` hears every generated token as it comes (runners
        that run the model in this process only)."""

    def close(self) -> None:
        """Release what the runner holds beyond the model (worker processes)."""


def page_image(request: OcrRequest) -> Image.Image:
    return request.image() if callable(request.image) else request.image


def settings_for(tokenizer: Tokenizer, **overrides) -> GenerationSettings:
    """Generation settings with the n-gram whitelist (<td>, </td>) resolved to this tokenizer's ids."""
    whitelist = frozenset(i for i in map(tokenizer.token_id, NGRAM_WHITELIST) if i is not None)
    return GenerationSettings(ngram_whitelist=whitelist, **overrides)


def decode_output(tokenizer: Tokenizer, token_ids: list[int]) -> str:
    text = tokenizer.decode(token_ids, skip_special_tokens=False)
    return text[:-len(EOS_TEXT)] if text.endswith(EOS_TEXT) else text


class TextStream:
    """Turns generated ids into text deltas, holding back incomplete UTF-8 sequences.

    Only the ids since the last emitted newline are re-decoded, so streaming stays linear.
    """

    def __init__(self, tokenizer: Tokenizer, on_text: Callable[[str], None]):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.pending: list[int] = []
        self.sent = 0

    def __call__(self, token: int) -> None:
        self.pending.append(token)
        text = decode_output(self.tokenizer, self.pending)
        if text.endswith("\ufffd") or len(text) <= self.sent:
            return
        self.on_text(text[self.sent:])
        if text.endswith("\n"):
            self.pending, self.sent = [], 0
        else:
            self.sent = len(text)
