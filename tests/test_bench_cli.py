"""`dsocr bench` end to end on the tiny model (CPU): the figures it reports, not their values."""
import json

import pytest


def test_bench_reports_throughput_and_the_plain_path_ratio(tiny_checkpoint, dsocr):
    outcome = dsocr("bench", "--model", tiny_checkpoint, "--device", "cpu", "--pages", "3", "--output-tokens", "4",
                    "--baseline", "--json")
    assert outcome.code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["pages"] == 3 and report["errors"] == 0 and report["compiled"] is False
    assert report["output_tokens_per_s"] == pytest.approx(report["pages_per_s"] * 4)
    assert report["speedup_vs_baseline"] > 0 and report["peak_batch"] == 3
    assert "benchmarking on the CPU" in outcome.stderr


def test_bench_prints_one_table(tiny_checkpoint, dsocr):
    outcome = dsocr("bench", "--model", tiny_checkpoint, "--device", "cpu", "--pages", "2", "--output-tokens", "3")
    assert outcome.code == 0, outcome.stderr
    assert "pages per s" in outcome.stdout and "single page tokens per s" in outcome.stdout


def test_bench_refuses_a_bad_batch(dsocr):
    outcome = dsocr("bench", "--random-weights", "--batch", "lots")
    assert outcome.code == 2 and "--batch takes auto or a number" in outcome.stderr
