import pytest
import torch
from PIL import Image

from dsocr_cli.checkpoint import load_model
from dsocr_cli.generate import GenerationSettings, banned_tokens, generate, is_looping, vision_embeddings
from dsocr_cli.preprocess import MODES, prepare_image
from dsocr_cli.prompts import build_prompt_ids, load_prompt
from dsocr_cli.tokenizer import Tokenizer


def test_ngram_guard_bans_the_token_that_repeats_an_ngram_inside_the_window():
    seq = [1, 2, 3, 9, 1, 2]
    assert banned_tokens(seq, 3, 90, frozenset()) == {3}
    assert banned_tokens(seq, 3, 90, frozenset({3})) == set()      # whitelisted
    assert banned_tokens(seq, 3, 3, frozenset()) == set()          # the earlier 1,2,3 left the window
    assert banned_tokens(seq, 0, 90, frozenset()) == set()         # guard off
    assert banned_tokens([4, 4, 4], 2, 90, frozenset()) == {4}


def test_loop_detection():
    assert is_looping([7, 8, 9] * 6, 16)
    assert not is_looping(list(range(40)), 16)
    assert not is_looping([7, 8, 9] * 6, 0)
    assert not is_looping([1, 2] * 3, 16)  # too short to judge


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    model = load_model(tiny_checkpoint, torch.device("cpu"), torch.float32)
    image = prepare_image(Image.new("RGB", (300, 200), "white"), MODES["tiny"])
    prompt = build_prompt_ids(Tokenizer.bundled(), load_prompt("free-ocr"), image.token_count)
    return model, vision_embeddings(model, image), prompt


def scripted(model, monkeypatch, script):
    """Make the model's next-token choice follow `script` (then repeat its last entry)."""
    calls = []

    def logits(hidden):
        step = min(len(calls), len(script) - 1)
        calls.append(1)
        out = torch.zeros(hidden.shape[0], model.config.decoder.vocab_size)
        out[:, script[step]] = 10.0
        out[:, 500] = 5.0  # the runner-up, taken when the guard bans the scripted token
        return out

    monkeypatch.setattr(model, "logits", logits)


def run(setup, **settings):
    model, image, prompt = setup
    return generate(model, prompt.ids, prompt.image_mask, image, GenerationSettings(**settings), eos_id=1, logprobs=True)


def test_finish_reasons(setup, monkeypatch):
    model = setup[0]
    scripted(model, monkeypatch, [11, 12, 1])
    out = run(setup)
    assert out.token_ids == [11, 12, 1] and out.finish_reason == "eos"
    scripted(model, monkeypatch, [11, 12, 13, 14])
    out = run(setup, max_new_tokens=6, ngram_size=0)
    assert out.token_ids == [11, 12, 13, 14, 14, 14] and out.finish_reason == "length"
    scripted(model, monkeypatch, [11, 12, 13] * 20)
    out = run(setup, ngram_size=0, loop_span=24)
    assert out.finish_reason == "repetition" and len(out.token_ids) == 24


def test_guard_steers_away_from_a_repeated_ngram(setup, monkeypatch):
    scripted(setup[0], monkeypatch, [11, 12, 11, 12, 11])
    out = run(setup, max_new_tokens=5, ngram_size=3, ngram_window=90)
    assert out.token_ids == [11, 12, 11, 12, 500]  # 11 would repeat the 3-gram (11, 12, 11)


def test_logprobs_are_log_softmax_of_the_chosen_tokens(setup):
    out = run(setup, max_new_tokens=4)
    assert len(out.token_logprobs) == 4 and all(lp <= 0 for lp in out.token_logprobs)
    assert out.prompt_tokens == 73 + 5 and out.vision_tokens == 73
