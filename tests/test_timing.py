"""`-v` on the model commands: one stderr line saying where the call's time went (import, load,
setup, work), measured by the loader and the command; stdout is the same with or without it."""
from __future__ import annotations

import re
import time

import pytest

from conftest import run_dsocr
from dsocr_cli import timing
from test_cli_ocr import page
from test_convert import make_pdf

SPLIT = re.compile(r"^dsocr: import (\d+\.\d\d) s, load (\d+\.\d\d) s, setup (\d+\.\d\d) s, work (\d+\.\d\d) s$", re.M)
TINY = ("--device", "cpu", "--mode", "tiny", "--max-new-tokens", "4")


def test_process_age_reads_the_start_tick_after_the_name():
    # field 22 (start time) is 12345 ticks; the name holds a ") " to mislead a plain split
    stat = "4242 (dsocr) x) S 1 4242 4242 0 -1 4194560 " + "0 " * 8 + "20 0 1 0 12345 1000 200 0\n"
    assert timing.process_age(stat, "200.45 100.00\n", 100) == pytest.approx(200.45 - 123.45)
    assert timing.process_age(stat, "100.00 1.0\n", 100) == 0.0  # clock ticks round: never negative


def test_this_process_started_before_now():
    assert timing.process_start() <= time.perf_counter()


def test_a_call_without_a_model_is_start_up_then_work():
    clock = timing.Clock(started=10.0, command_started=12.5)
    split = clock.split()
    assert list(split) == ["import", "work"] and split["import"] == 2.5 and split["work"] >= 0


def test_phases_come_in_order_and_a_second_model_counts_as_work():
    clock = timing.Clock(started=time.perf_counter(), command_started=time.perf_counter())
    clock.model_starts()
    clock.mark("setup")
    clock.mark("load")
    clock.model_starts()
    assert list(clock.split()) == ["import", "load", "setup", "work"]
    assert timing.split_line({"import": 0.414, "work": 2.0}) == "import 0.41 s, work 2.00 s"


def test_ocr_v_prints_the_split_of_a_real_process(dsocr, tiny_checkpoint, tmp_path):
    image = page(tmp_path / "p.png")
    plain = dsocr("ocr", image, "--model", tiny_checkpoint, *TINY, "--json")  # in-process: no start-up to pay
    timed = run_dsocr("ocr", image, "--model", tiny_checkpoint, *TINY, "--json", "-v")
    assert plain.code == timed.returncode == 0, timed.stderr
    assert timed.stdout == plain.stdout and not SPLIT.search(plain.stderr)
    (numbers,) = SPLIT.findall(timed.stderr)
    seconds = [float(n) for n in numbers]
    assert all(s >= 0 for s in seconds) and seconds[0] > 0  # an interpreter takes time to start


@pytest.mark.parametrize("command", [("parse-chart", "--json"), ("parse-chem",), ("describe",), ("locate", "Hello")])
def test_every_per_image_command_takes_v(dsocr, tiny_checkpoint, tmp_path, command):
    name, *extra = command
    args = (name, page(tmp_path / "p.png"), *extra, "--model", tiny_checkpoint, *TINY)
    plain, timed = dsocr(*args), dsocr(*args, "-v")
    assert timed.code == plain.code and timed.stdout == plain.stdout
    assert len(SPLIT.findall(timed.stderr)) == 1 and not SPLIT.search(plain.stderr)


def test_convert_v_adds_the_split_to_its_line_per_document(dsocr, tiny_checkpoint, tmp_path):
    make_pdf(tmp_path / "doc.pdf", 1)
    args = ("convert", tmp_path / "doc.pdf", "-o", tmp_path / "doc.md", "--model", tiny_checkpoint, *TINY)
    timed = dsocr(*args, "-v")
    assert timed.code in (0, 1), timed.stderr
    assert f"doc.pdf: 1 page -> {tmp_path / 'doc.md'}" in timed.stderr and len(SPLIT.findall(timed.stderr)) == 1
    assert not SPLIT.search(dsocr(*args).stderr)


def test_from_raw_has_no_model_so_its_split_is_import_and_work(dsocr, tmp_path):
    (tmp_path / "p.txt").write_text("Hello", encoding="utf-8")
    out = dsocr("describe", "--from-raw", tmp_path / "p.txt", "-v")
    assert out.code == 0 and out.stdout == "Hello\n"
    assert re.search(r"^dsocr: import \d+\.\d\d s, work \d+\.\d\d s$", out.stderr, re.M), out.stderr
