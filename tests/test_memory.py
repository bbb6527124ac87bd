import pytest

from dsocr_cli.errors import DsocrError
from dsocr_cli.memory import Tier, Turn, forgetting_steps, parse_history, transcript


def test_history_reads_both_content_shapes_and_skips_blank_lines():
    text = ('{"role": "user", "content": "Hi there"}\n\n'
            '{"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "again"}]}\n')
    assert parse_history(text) == [Turn("user", "Hi there"), Turn("assistant", "Hello\nagain")]


@pytest.mark.parametrize("line, message", [
    ("{not json", "chat.jsonl:2: not JSON"),
    ('{"content": "no role"}', 'chat.jsonl:2: expected an object with "role" and "content"'),
    ('{"role": "user", "content": [{"type": "image_url"}]}', 'chat.jsonl:2: "content" must be'),
])
def test_history_errors_name_the_line(line, message):
    with pytest.raises(DsocrError, match=message):
        parse_history('{"role": "user", "content": "fine"}\n' + line, "chat.jsonl")


def test_transcript_labels_each_turn():
    assert transcript([Turn("user", " Hi \n"), Turn("assistant", "Hello")]) == "User: Hi\n\nAssistant: Hello"


def test_forgetting_moves_older_turns_to_lower_resolution():
    assert forgetting_steps(20, keep_text=4, keep_small=8) == [
        [Tier("text", 0, 20)],
        [Tier("small", 0, 16), Tier("text", 16, 20)],
        [Tier("tiny", 0, 8), Tier("small", 8, 16), Tier("text", 16, 20)],
    ]


def test_forgetting_leaves_out_steps_that_change_nothing():
    assert forgetting_steps(3, keep_text=4, keep_small=8) == [[Tier("text", 0, 3)]]
    assert forgetting_steps(10, keep_text=4, keep_small=8) == [
        [Tier("text", 0, 10)], [Tier("small", 0, 6), Tier("text", 6, 10)]]
    assert forgetting_steps(5, keep_text=0, keep_small=0) == [
        [Tier("text", 0, 5)], [Tier("small", 0, 5)], [Tier("tiny", 0, 5)]]
