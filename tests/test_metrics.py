import random

import pytest

from dsocr_cli.metrics import (compression_ratio, edit_distance, mean, normalise_text, normalised_edit_distance,
                               precision)


def textbook_levenshtein(a: str, b: str) -> int:
    """The plain two-row dynamic programme, to check the vectorised one against."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3),     # k->s, e->i, +g
    ("flaw", "lawn", 2),          # -f, +n
    ("intention", "execution", 5),
    ("", "abc", 3),
    ("abc", "", 3),
    ("abc", "abc", 0),
    ("北京大学", "北大", 2),
])
def test_edit_distance_by_hand(a, b, distance):
    assert edit_distance(a, b) == distance


def test_edit_distance_matches_the_textbook_programme():
    rng = random.Random(7)
    for _ in range(300):
        a = "".join(rng.choice("abc ") for _ in range(rng.randint(0, 15)))
        b = "".join(rng.choice("abc ") for _ in range(rng.randint(0, 15)))
        assert edit_distance(a, b) == textbook_levenshtein(a, b), (a, b)


def test_normalisation_keeps_only_word_characters_and_cjk():
    assert normalise_text("# Hello, **World**!\n\n- x_1 (2)") == "HelloWorldx_12"
    assert normalise_text("中文，句子。") == "中文句子"
    assert normalise_text(r"a\nb\tc") == "abc"          # escaped newlines and tabs, as OmniDocBench drops them
    assert normalise_text("and/not") == "andot"         # ... and its '/n' rule, kept for comparable numbers


def test_normalised_edit_distance_by_hand():
    # "Thecat" vs "thebat": T->t and c->b over 6 characters.
    assert normalised_edit_distance("The cat.", "the bat") == pytest.approx(2 / 6)
    # "thecatsat" vs "thecatsatonthemat": 8 insertions over 17.
    assert normalised_edit_distance("the cat sat", "the cat sat on the mat") == pytest.approx(8 / 17)
    assert normalised_edit_distance("**Same** text!", "Same text") == 0.0
    assert normalised_edit_distance("...", "") is None   # nothing left to compare: not scored
    assert normalised_edit_distance("abc", "") == 1.0


def test_precision_is_the_share_of_truth_words_read_back():
    truth = "the cat sat on the mat"                      # 5 distinct words
    assert precision("the cat sat", truth) == pytest.approx(3 / 5)
    assert precision("the cat sat on the mat and then some", truth) == 1.0   # extra words cost nothing
    assert precision("", truth) == 0.0
    assert precision("anything", "   ") is None


def test_precision_splits_chinese_into_characters():
    assert precision("我爱上海", "我爱北京") == pytest.approx(2 / 4)
    assert precision("我 love 北京", "我爱北京 love") == pytest.approx(4 / 5)


def test_ratio_and_mean():
    assert compression_ratio(1000, 100) == 10.0
    assert mean([0.5, None, 1.0]) == 0.75
    assert mean([None]) is None
