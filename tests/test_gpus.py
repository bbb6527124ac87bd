"""--gpus: engines in worker processes on one shared page queue. On CPU, DSOCR_CPU_WORKERS=2
starts two engines with the tiny model, which must write exactly what one engine writes."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from conftest import convert_folder as convert, outputs_of as outputs
from dsocr_cli.engine.multi import parse_gpus
from dsocr_cli.errors import DsocrError
from dsocr_cli.manifest import MANIFEST_NAME

def test_parse_gpus():
    assert parse_gpus("all", 4) == [0, 1, 2, 3]
    assert parse_gpus("0,1,3", 4) == [0, 1, 3]
    assert parse_gpus(" 2 ", 4) == [2]
    for text, message in [("0,4", "no GPU 4"), ("1,1", "named twice"), ("x", "use all"), ("0", "no CUDA GPU")]:
        with pytest.raises(DsocrError, match=message):
            parse_gpus(text, 0 if text == "0" else 4)


def test_two_engines_write_what_one_writes(scale_folder, tiny_checkpoint, one_engine_outputs, tmp_path):
    result = convert(scale_folder, tmp_path / "out", tiny_checkpoint, "--gpus", "all")
    assert result.returncode in (0, 1), result.stderr
    assert "6 converted (12 pages" in result.stderr
    assert outputs(tmp_path / "out") == one_engine_outputs
    lines = [json.loads(line) for line in (tmp_path / "out" / MANIFEST_NAME).read_text().splitlines()]
    assert sorted(e["document"] for e in lines) == sorted(p.relative_to(scale_folder).as_posix() for p in scale_folder.rglob("*.pdf"))


def engine_processes(parent: int) -> list[int]:
    """The engine workers the command started (spawned children, not multiprocessing's tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def kill_an_engine_after_the_first_document(folder, out, checkpoint, engines: int):
    """`convert --gpus all` with `engines` CPU engines, one page at a time (so documents finish one by
    one); the last engine is killed once the first document is recorded. The run and its stderr."""
    run = convert(folder, out, checkpoint, "--gpus", "all", "--batch", "1", "--max-new-tokens", "16",
                  cpu_engines=engines, wait=False)
    manifest = out / MANIFEST_NAME
    wait_until(lambda: manifest.is_file() and manifest.read_text().strip(), run, "the first document is recorded")
    workers = engine_processes(run.pid)
    assert len(workers) == engines, run.communicate()
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = run.communicate(timeout=BOUND)
    return run, stderr


BOUND = 900  # seconds: only a hung run gets near it, however loaded the machine


def wait_until(condition, run, what: str) -> None:
    """Poll until `condition()` holds; fail, with the command's output, if the command ends first
    or nothing happens within BOUND (a generous bound: load only makes the wait longer)."""
    deadline = time.monotonic() + BOUND
    while not condition():
        if run.poll() is not None:
            pytest.fail(f"the command ended before {what}: {run.communicate()}")
        if time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"{what} did not happen within {BOUND} s: {run.communicate()}")
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_killed_engine_loses_only_documents_in_flight_and_the_rerun_completes(scale_folder, tiny_checkpoint,
                                                                                tmp_path):
    out = tmp_path / "out"
    tokens = ("--max-new-tokens", "16")
    manifest = out / MANIFEST_NAME
    run, stderr = kill_an_engine_after_the_first_document(scale_folder, out, tiny_checkpoint, engines=1)
    assert run.returncode == 1 and "stopped (exit code -9)" in stderr, stderr
    first = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert 1 <= len(first) < 6 and all(e["state"] in ("done", "incomplete") for e in first)
    kept = {e["document"]: (out / e["document"]).with_suffix(".md").stat().st_mtime_ns for e in first}

    again = convert(scale_folder, out, tiny_checkpoint, "--device", "cpu", *tokens, "-v")  # any runner resumes
    assert again.returncode in (0, 1), again.stderr
    assert again.stderr.count("skipped (done already)") + again.stderr.count("left damaged by an earlier run") \
        == len(first)
    assert {d: (out / d).with_suffix(".md").stat().st_mtime_ns for d in kept} == kept  # finished ones untouched
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(e["document"] for e in lines) == sorted(p.relative_to(scale_folder).as_posix() for p in scale_folder.rglob("*.pdf"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.md")) == \
        sorted(p.relative_to(scale_folder).with_suffix(".md").as_posix() for p in scale_folder.rglob("*.pdf"))
    assert not list(out.rglob(".*.tmp"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_an_engine_killed_mid_run_leaves_the_others_to_finish(scale_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    manifest = out / MANIFEST_NAME
    run, stderr = kill_an_engine_after_the_first_document(scale_folder, out, tiny_checkpoint, engines=2)
    assert run.returncode in (0, 1) and "its pages go to the other engines" in stderr, stderr
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    documents = sorted(p.relative_to(scale_folder).as_posix() for p in scale_folder.rglob("*.pdf"))
    assert sorted(e["document"] for e in lines) == documents and all(e["state"] in ("done", "incomplete") for e in lines)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.md")) == \
        sorted(d.replace(".pdf", ".md") for d in documents)


def test_pages_are_dealt_to_the_engine_holding_fewest_run_after_run(tiny_checkpoint):
    from dsocr_cli.bench import _requests
    from dsocr_cli.requests import stronger_guard
    from dsocr_cli.engine.multi import MultiRunner
    from dsocr_cli.engine.spec import EngineSpec
    from dsocr_cli.preprocess import MODES
    from dsocr_cli.runner import open_model

    spec = EngineSpec(partial(open_model, str(tiny_checkpoint), dtype="fp32"), {"max_new_tokens": 4})
    runner = MultiRunner(["cpu", "cpu"], spec)
    try:
        pages = list(runner.run(_requests(6, MODES["tiny"], "<image>\nFree OCR.")))
        assert sorted(r.key for r in pages) == list(range(6)) and runner.pages_done == [3, 3]
        again = list(runner.run(_requests(4, MODES["tiny"], "<image>\nFree OCR.", offset=6),
                                settings=stronger_guard(runner.settings)))
        assert sorted(r.key for r in again) == [6, 7, 8, 9] and runner.pages_done == [5, 5]
    finally:
        runner.close()
    assert not any(process.is_alive() for process in runner.processes)


def test_an_engine_that_dies_gives_its_pages_to_the_others(tiny_checkpoint):
    """Killed before the run: the pages dealt to it before anyone noticed are run again elsewhere."""
    from dsocr_cli.bench import _requests
    from dsocr_cli.engine.multi import MultiRunner
    from dsocr_cli.engine.spec import EngineSpec
    from dsocr_cli.preprocess import MODES
    from dsocr_cli.runner import open_model

    spec = EngineSpec(partial(open_model, str(tiny_checkpoint), dtype="fp32"), {"max_new_tokens": 4})
    runner = MultiRunner(["cpu", "cpu"], spec)
    try:
        runner.processes[1].kill()
        runner.processes[1].join()
        with pytest.warns(UserWarning, match="engine on cpu stopped .* its pages go to the other engines"):
            pages = list(runner.run(_requests(6, MODES["tiny"], "<image>\nFree OCR.")))
        assert sorted(r.key for r in pages) == list(range(6)) and runner.pages_done[0] == 6
        again = list(runner.run(_requests(2, MODES["tiny"], "<image>\nFree OCR.", offset=6)))
        assert sorted(r.key for r in again) == [6, 7]
    finally:
        runner.close()


def test_requests_that_wait_for_their_results_get_a_dead_engine_s_pages_run_elsewhere(tiny_checkpoint):
    """convert's live retries: the requests say PENDING until their results are in, so the pages of an
    engine that dies holding some must be run again within the run, not in a later round that never
    comes. The engine is killed once the pages are dealt, at the first PENDING."""
    from dsocr_cli.bench import _requests
    from dsocr_cli.engine.multi import MultiRunner
    from dsocr_cli.engine.spec import EngineSpec
    from dsocr_cli.preprocess import MODES
    from dsocr_cli.requests import PENDING
    from dsocr_cli.runner import open_model

    done: list[int] = []

    def waiting_requests():
        yield from _requests(6, MODES["tiny"], "<image>\nFree OCR.")
        runner.processes[1].kill()
        for _ in range(600):  # each PENDING waits for a result (or half a second): a bound, should it hang
            if len(done) == 6:
                break
            yield PENDING
        assert len(done) == 6, "the dead engine's pages never came back"
        yield from _requests(1, MODES["tiny"], "<image>\nFree OCR.", offset=6)

    spec = EngineSpec(partial(open_model, str(tiny_checkpoint), dtype="fp32"), {"max_new_tokens": 4})
    runner = MultiRunner(["cpu", "cpu"], spec)
    try:
        with pytest.warns(UserWarning, match="its pages go to the other engines"):
            for result in runner.run(waiting_requests()):
                done.append(result.key)
        assert sorted(done) == list(range(7)) and runner.pages_done[0] > 4
    finally:
        runner.close()
