"""Parse the model's grounding markup into blocks; never evaluates model output.

With grounding prompts the model writes, per layout block,

    <|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>
    CONTENT ...

with coordinates on a 0..999 grid. Output can be truncated or malformed (a tag cut off, a box
with three numbers, values out of range); the parser keeps every character of content and
records what it could not read instead of failing.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

GRID = 999
MAX_BOXES = 500                  # per page: far more than any real page has
Box = tuple[int, int, int, int]

_REF = re.compile(r"<\|ref\|>(.*?)<\|/ref\|>", re.S)
_REF_OPEN = re.compile(r"<\|ref\|>([^\n<]*)")                 # label cut off or unterminated
_DET = re.compile(r"[ \t]*<\|det\|>(.*?)<\|/det\|>", re.S)
_DET_OPEN = re.compile(r"[ \t]*<\|det\|>([^\n]*)")             # truncated box list: rest of the line
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
_TAG = re.compile(r"<\|/?(?:ref|det|grounding)\|>")


@dataclass
class Block:
    label: str                       # text, title, sub_title, table, image, image_caption, ...
    boxes: list[Box]                 # on the 0..999 grid, clamped and ordered (x1 <= x2, y1 <= y2)
    text: str                        # the content after the tags, surrounding blank lines removed
    problems: list[str] = field(default_factory=list)  # what was malformed, for the layout JSON

    @property
    def box(self) -> Box | None:
        """The union of the block's boxes (most blocks have one)."""
        if not self.boxes:
            return None
        xs1, ys1, xs2, ys2 = zip(*self.boxes)
        return (min(xs1), min(ys1), max(xs2), max(ys2))


def parse_boxes(det: str) -> tuple[list[Box], list[str]]:
    """Integer boxes from a <|det|> payload, clamped to the grid; problems noted, nothing guessed.
    A coordinate too large for a float (310+ digits) makes a bad box, dropped and noted."""
    boxes, problems = [], []
    for match in _BOX.finditer(det):
        written = match.group(0) if len(match.group(0)) <= 60 else match.group(0)[:60] + "…"
        values = [float(v) for v in match.groups()]
        if not all(map(math.isfinite, values)):
            problems.append(f"box {written} has a coordinate no page can hold, dropped")
            continue
        values = [round(v) for v in values]
        if any(v < 0 or v > GRID for v in values):
            problems.append(f"box {written} out of range, clamped")
        x1, y1, x2, y2 = (min(max(v, 0), GRID) for v in values)
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    leftover = _BOX.sub("", det).strip(" ,[]\n")
    if leftover or not (boxes or problems):
        problems.append(f"unreadable box data {det.strip()[:60]!r}")
    return boxes, problems


def parse_blocks(raw: str) -> list[Block]:
    """Blocks in output order. Text before the first tag becomes an unboxed `text` block.
    Past MAX_BOXES boxes on a page, further boxes are dropped and noted (figures cost a crop each)."""
    starts = [m.start() for m in re.finditer(r"<\|ref\|>", raw)]
    head = raw[:starts[0]] if starts else raw
    blocks = [Block("text", [], _clean(head))] if head.strip() else []
    budget = MAX_BOXES
    for start, end in zip(starts, starts[1:] + [len(raw)]):
        block = _parse_block(raw[start:end])
        if len(block.boxes) > budget:
            block.problems.append(f"{len(block.boxes) - budget} box(es) past {MAX_BOXES} on the page, dropped")
            block.boxes = block.boxes[:budget]
        budget -= len(block.boxes)
        blocks.append(block)
    return blocks


def _parse_block(chunk: str) -> Block:
    problems: list[str] = []
    ref = _REF.match(chunk)
    if not ref:
        ref = _REF_OPEN.match(chunk)
        problems.append("unterminated <|ref|>")
    label, pos = ref.group(1).strip() or "text", ref.end()
    det = _DET.match(chunk, pos) or _DET_OPEN.match(chunk, pos)
    boxes: list[Box] = []
    if det is None:
        problems.append("no <|det|> boxes")
    else:
        if not det.group(0).rstrip().endswith("<|/det|>"):
            problems.append("unterminated <|det|>")
        boxes, box_problems = parse_boxes(det.group(1))
        problems += box_problems
        pos = det.end()
    return Block(label, boxes, _clean(chunk[pos:]), problems)


def _clean(text: str) -> str:
    """Content without stray tags and without the blank lines around it (inner lines kept)."""
    return _TAG.sub("", text).strip("\n").rstrip()


def strip_grounding(raw: str) -> str:
    """Readable text: the blocks' contents separated by blank lines, no tags or boxes."""
    if "<|ref|>" not in raw and "<|det|>" not in raw:
        return _TAG.sub("", raw).strip()
    return "\n\n".join(b.text for b in parse_blocks(raw) if b.text)


def to_pixels(box: Box, width: int, height: int) -> Box:
    """0..999 grid -> page pixels, as the official code does: int(v / 999 * side)."""
    x1, y1, x2, y2 = box
    return (int(x1 / GRID * width), int(y1 / GRID * height), int(x2 / GRID * width), int(y2 / GRID * height))
