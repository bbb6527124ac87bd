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


def test_bench_draws_each_page_length_from_a_file(tiny_checkpoint, dsocr, tmp_path):
    (tmp_path / "lengths.txt").write_text("# tokens per page\n3\n\n7\n")
    outcome = dsocr("bench", "--model", tiny_checkpoint, "--device", "cpu", "--pages", "4", "--output-tokens", "2",
                    "--lengths", tmp_path / "lengths.txt", "--json")
    assert outcome.code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["lengths"].startswith("drawn") and report["errors"] == 0
    assert 3 <= report["output_tokens_per_page"] <= 7


def test_bench_runs_convert_on_a_real_pdf(tiny_checkpoint, dsocr, tmp_path):
    import pymupdf
    doc = pymupdf.open()
    for n in range(3):
        doc.new_page().insert_text((72, 72), f"Page {n + 1} of a real PDF", fontsize=14)
    doc.save(tmp_path / "three.pdf")
    (tmp_path / "lengths.txt").write_text("4\n")
    outcome = dsocr("bench", "--model", tiny_checkpoint, "--device", "cpu", "--pdf", tmp_path / "three.pdf",
                    "--lengths", tmp_path / "lengths.txt", "--json")
    assert outcome.code == 0, outcome.stderr
    report = json.loads(outcome.stdout)
    assert report["documents"] == 1 and report["pages"] == 3 and report["failed_pages"] == 0
    assert report["output_tokens_per_page"] == 4 and report["incomplete_pages"] == 0


def test_bench_refuses_a_bad_lengths_file(dsocr, tmp_path):
    (tmp_path / "lengths.txt").write_text("12\nmany\n")
    outcome = dsocr("bench", "--random-weights", "--lengths", tmp_path / "lengths.txt")
    assert outcome.code == 2 and "line 2 is not a positive token count" in outcome.stderr


def test_real_lengths_include_pages_that_loop_until_the_guard():
    from dsocr_cli.page_lengths import real_lengths
    real = real_lengths()
    draws = [real.draw(key) for key in range(2000)]
    loops = [n for n, reason in draws if reason == "repetition"]
    assert 0.04 < len(loops) / len(draws) < 0.10
    assert all(1 <= n <= real.longest for n, _ in draws)
    assert real.draw(5) == real.draw(5) and real.draw(5, attempt=1) != real.draw(5)
