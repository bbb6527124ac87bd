"""Optical memory, the paper's "forgetting": older conversation turns kept as page images read at
falling resolution, so the context a conversation costs shrinks as its turns age.

The newest `keep_text` turns stay text. Step 1 renders everything older to pages read in `small`
mode; step 2 moves everything older than the next `keep_small` turns down to `tiny`. This module
reads the history and plans the steps; the caller renders the pages and counts the tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import DsocrError


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class Tier:
    form: str    # "text", or the mode its pages are read in
    start: int   # turns[start:stop], oldest first
    stop: int


def parse_history(text: str, source: str = "history") -> list[Turn]:
    """JSONL, oldest turn first: one {"role": ..., "content": ...} object a line, content a string or
    a list of {"type": "text", "text": ...} parts (the chat APIs' two shapes). Blank lines are skipped."""
    turns = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DsocrError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("role"), str) or "content" not in item:
            raise DsocrError(f'{where}: expected an object with "role" and "content"')
        turns.append(Turn(item["role"], _content_text(item["content"], where)))
    return turns


def _content_text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    raise DsocrError(f'{where}: "content" must be a string or a list of {{"type": "text", "text": ...}} parts')


def transcript(turns: list[Turn]) -> str:
    """The turns as one text, `Role: content`, a blank line between turns: what a page shows and
    what the text form costs."""
    return "\n\n".join(f"{t.role.capitalize()}: {t.content.strip()}" for t in turns)


def forgetting_steps(n_turns: int, keep_text: int, keep_small: int) -> list[list[Tier]]:
    """Step 0 is all text; step 1 renders all but the newest `keep_text` turns for `small`; step 2
    moves all but the newest keep_text + keep_small turns on to `tiny`. Steps that would change
    nothing are left out; empty tiers too."""
    text_from = max(n_turns - keep_text, 0)
    small_from = max(text_from - keep_small, 0)
    steps = [[Tier("text", 0, n_turns)]]
    if text_from > 0:
        steps.append(_tiers([("small", 0), ("text", text_from)], n_turns))
    if small_from > 0:
        steps.append(_tiers([("tiny", 0), ("small", small_from), ("text", text_from)], n_turns))
    return steps


def _tiers(starts: list[tuple[str, int]], stop: int) -> list[Tier]:
    ends = [start for _, start in starts[1:]] + [stop]
    return [Tier(form, start, end) for (form, start), end in zip(starts, ends) if end > start]
