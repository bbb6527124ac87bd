"""--shard I/N: every input in exactly one shard, the same one on every run."""
from __future__ import annotations

from pathlib import PurePath

import pytest

from dsocr_cli import convert as pipeline
from dsocr_cli.documents import Source
from dsocr_cli.errors import DsocrError
from dsocr_cli.preprocess import MODES
from dsocr_cli.shard import Shard, parse_shard

NAMES = [f"batch/{n:05d}.pdf" for n in range(1000)] + ["a.pdf", "sub/a.pdf", "ü ñ.png"]


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_input_exactly_once(count):
    owners = {name: [i for i in range(count) if Shard(i, count).holds(name)] for name in NAMES}
    assert all(len(shards) == 1 for shards in owners.values())
    sizes = [sum(shards == [i] for shards in owners.values()) for i in range(count)]
    assert min(sizes) > len(NAMES) / count * 0.8  # and roughly even


def test_the_split_is_stable_across_runs():
    # sha256, not Python's salted hash(): the same inputs land in the same shards in every process
    assert [Shard(i, 4).holds("batch/00001.pdf") for i in range(4)] == [True, False, False, False]


def test_plan_jobs_takes_only_the_shard_but_names_outputs_over_all_inputs(tmp_path):
    from test_convert import make_pdf

    for name in ("a", "b", "c", "d", "e"):
        make_pdf(tmp_path / f"{name}.pdf", 1)
    sources = [Source(tmp_path / f"{name}.pdf", PurePath(f"{name}.pdf"), tmp_path) for name in "abcde"]
    options = pipeline.ConvertOptions(mode=MODES["tiny"], prompt="<image>\nConvert.")
    planned = []
    for index in range(3):
        jobs, reports = pipeline.plan_jobs(sources, f"{tmp_path}/out/", options, shard=Shard(index, 3))
        assert not reports
        planned += [job.source.relative.as_posix() for job in jobs]
    assert sorted(planned) == ["a.pdf", "b.pdf", "c.pdf", "d.pdf", "e.pdf"]


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0", "0/1-4", "5/1-4", "1/4-1", "1/1-", "1/-4",
                                  "1/" + "9" * 20, "\u0661/2"])
def test_bad_shards_are_usage_errors(text):
    with pytest.raises(DsocrError, match="--shard"):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard("2/5") == Shard(2, 5)


def test_an_array_numbered_from_one_says_so():
    assert [parse_shard(f"{i}/1-4") for i in range(1, 5)] == [Shard(i, 4) for i in range(4)]
    assert parse_shard("7/5-8") == Shard(2, 4)
    with pytest.raises(DsocrError, match="for an array numbered from 1 write 4/1-4"):
        parse_shard("4/4")
