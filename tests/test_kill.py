"""Kill tests: the main process, a preprocessing worker or an engine SIGKILLed at a seeded moment
(after the k-th document is recorded, k drawn from a seeded random), then the same command run
again. The result must be what an undisturbed run writes, byte for byte, with no temporaries,
no process left behind and a manifest of whole lines, one per document. Tiny model on CPU."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import convert_folder as convert, outputs_of as outputs
from test_gpus import engine_processes as children  # spawned children: engines or pool workers
from dsocr_cli.manifest import MANIFEST_NAME

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

SEED = 15
MARK = "DSOCR_KILL_TEST"  # every process a run starts inherits it: how the test finds them all


def processes_marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def start(folder, out, checkpoint, *extra, **env):
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, **env}
    args = [sys.executable, "-m", "dsocr_cli", "convert", str(folder), "-o", f"{out}/", "--model", str(checkpoint),
            "--mode", "tiny", "--max-new-tokens", "8", "--json", "--keep-raw", "--batch", "1", *extra]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), mark


def wait_for(condition, what: str, limit: float = 120):
    """A safety net only: the test waits for an event, never for a time."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)
    return value


def recorded(out: Path) -> int:
    path = out / MANIFEST_NAME
    return path.read_text().count("\n") if path.is_file() else 0


def check_resumed(folder, out, checkpoint, expected):
    again = convert(folder, out, checkpoint, "--device", "cpu", "--batch", "1")
    assert again.returncode in (0, 1) and "Traceback" not in again.stderr, again.stderr
    assert outputs(out) == expected
    assert not [p for p in out.rglob("*.tmp")]
    text = (out / MANIFEST_NAME).read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # whole lines only: a torn one would not parse
    documents = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.pdf"))
    assert sorted(e["document"] for e in lines) == documents  # each document once


@pytest.fixture(scope="module")
def undisturbed(scale_folder, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    result = convert(scale_folder, out, tiny_checkpoint, "--device", "cpu", "--batch", "1")
    assert result.returncode in (0, 1), result.stderr
    return outputs(out)


def test_main_process_killed_with_gpus_leaves_nothing_running_and_resumes_exactly(
        scale_folder, tiny_checkpoint, undisturbed, tmp_path):
    out = tmp_path / "out"
    run, mark = start(scale_folder, out, tiny_checkpoint, "--gpus", "all", DSOCR_CPU_WORKERS="2")
    k = random.Random(SEED).randint(1, 3)
    wait_for(lambda: recorded(out) >= k, f"document {k} recorded")
    assert len(children(run.pid)) == 2
    run.kill()
    run.communicate()
    wait_for(lambda: not processes_marked(mark), "the engines to notice their parent is gone", limit=30)
    check_resumed(scale_folder, out, tiny_checkpoint, undisturbed)


def test_a_killed_preprocessing_worker_costs_nothing(scale_folder, tiny_checkpoint, undisturbed, tmp_path):
    out = tmp_path / "out"
    run, mark = start(scale_folder, out, tiny_checkpoint, "--device", "cpu", DSOCR_PREPROCESS_WORKERS="2")
    k = random.Random(SEED + 1).randint(1, 3)
    wait_for(lambda: recorded(out) >= k, f"document {k} recorded")
    workers = wait_for(lambda: children(run.pid), "the preprocessing workers")
    os.kill(random.Random(SEED).choice(workers), signal.SIGKILL)
    _, stderr = run.communicate(timeout=180)
    assert run.returncode in (0, 1) and "Traceback" not in stderr, stderr
    assert outputs(out) == undisturbed  # its page was prepared again: nothing lost, nothing to resume
    assert not processes_marked(mark)
    check_resumed(scale_folder, out, tiny_checkpoint, undisturbed)


def test_the_last_engine_killed_ends_the_run_and_the_rerun_completes_it(
        scale_folder, tiny_checkpoint, undisturbed, tmp_path):
    out = tmp_path / "out"
    run, mark = start(scale_folder, out, tiny_checkpoint, "--gpus", "all", DSOCR_CPU_WORKERS="1")
    k = random.Random(SEED + 2).randint(1, 3)
    wait_for(lambda: recorded(out) >= k, f"document {k} recorded")
    [engine] = children(run.pid)
    os.kill(engine, signal.SIGKILL)
    _, stderr = run.communicate(timeout=180)
    assert run.returncode != 0 and "no engine is left" in stderr and "Traceback" not in stderr, stderr
    wait_for(lambda: not processes_marked(mark), "every process to end", limit=30)
    check_resumed(scale_folder, out, tiny_checkpoint, undisturbed)


def test_ctrl_c_says_interrupted_and_exits_130(scale_folder, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    run, mark = start(scale_folder, out, tiny_checkpoint, "--device", "cpu")
    wait_for(lambda: recorded(out) >= 1, "a document recorded")
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and stderr.strip().endswith("dsocr: interrupted"), stderr
    assert not processes_marked(mark)
