"""Honest resume and safe writes: incomplete documents stay damage until retried, a write that
fails is one document's or one image's error, names read back stay inside their folder, shards
keep their own manifests, one run per output folder, no temporaries left behind."""
from __future__ import annotations

import json
from pathlib import Path, PurePath

import fsspec
import pytest

from dsocr_cli import storage
from dsocr_cli.convert import DocumentReport
from dsocr_cli.documents import Source
from dsocr_cli.errors import DsocrError
from dsocr_cli.folder_lock import lock_folder
from dsocr_cli.manifest import MANIFEST_NAME, Manifest, ManifestError, inside, manifest_name
from dsocr_cli.shard import Shard
from dsocr_cli.writers import plan_outputs, remove_temporaries, write_atomic
from test_convert import make_pdf

TINY = ("--mode", "tiny", "--max-new-tokens", "6", "--device", "cpu")


def converted(out: Path, name: str, **damage) -> DocumentReport:
    source = Source(Path("in") / name, PurePath(name), Path("in"))
    target = plan_outputs([source], f"{out}/")[0]
    write_atomic(target.markdown, "# Title\n")
    return DocumentReport(source, target, pages=3, **damage)


def test_damaged_documents_are_recorded_incomplete_kept_and_retried_on_request(tmp_path):
    report = converted(tmp_path, "a.pdf", incomplete=[2], failed=["page 3: worker died"])
    Manifest(tmp_path, "opts").record(report)
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert entry["state"] == "incomplete" and entry["incomplete_pages"] == [2]
    manifest = Manifest(tmp_path, "opts")
    assert manifest.finished(report.target) and not manifest.finished(report.target, retry_incomplete=True)
    assert manifest.damage(report.target) == ([2], ["page 3: worker died"])


def test_a_manifest_that_cannot_be_written_is_the_documents_error(tmp_path):
    (tmp_path / MANIFEST_NAME).mkdir()  # stands in for a full or read-only disk
    with pytest.raises(ManifestError, match="cannot record it in"):
        Manifest(tmp_path, "opts").record(converted(tmp_path, "a.pdf"))


def test_names_read_back_stay_inside_their_folder(tmp_path):
    assert inside("a.md") and inside("sub/a_images/p1.png")
    for name in ("../x.md", "/etc/passwd", "sub/../../x", "", "C:/x", "a\\..\\..\\x"):
        assert not inside(name), name
    report = converted(tmp_path, "a.pdf")
    line = {"document": "a.pdf", "state": "done", "options": "o", "outputs": {"../outside.md": "0" * 64}}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(line) + "\n")
    assert not Manifest(tmp_path, "o").finished(report.target)


def test_a_store_never_fetches_a_recorded_name_outside_the_folder(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/guard-out/a.md", b"# a\n")
    fs.pipe("/guard-secret.md", b"secret")
    outputs = {"a.md": "0" * 64, "../guard-secret.md": "0" * 64}
    fs.pipe(f"/guard-out/{MANIFEST_NAME}", (json.dumps({"document": "a.pdf", "state": "done",
                                                        "outputs": outputs}) + "\n").encode())
    try:
        folder = storage.RemoteFolder("memory://guard-out/")
        assert (folder.local / "a.md").is_file() and not (folder.local.parent / "guard-secret.md").exists()
    finally:
        fs.rm("/guard-out", recursive=True)
        fs.rm("/guard-secret.md")


def test_shards_append_to_their_own_manifests_and_every_one_is_read(tmp_path):
    names = [manifest_name(Shard(i, 2)) for i in range(2)]
    assert names == ["dsocr-manifest.shard-0-of-2.jsonl", "dsocr-manifest.shard-1-of-2.jsonl"]
    a, b = converted(tmp_path, "a.pdf"), converted(tmp_path, "b.pdf")
    Manifest(tmp_path, "o", names[0]).record(a)
    Manifest(tmp_path, "o", names[1]).record(b)
    assert not (tmp_path / MANIFEST_NAME).exists()
    whole = Manifest(tmp_path, "o")
    assert whole.finished(a.target) and whole.finished(b.target)


def test_one_run_per_output_folder(tmp_path):
    held = lock_folder(tmp_path)
    with pytest.raises(DsocrError, match="another dsocr convert is writing to this folder"):
        lock_folder(tmp_path)
    held.close()  # as when the run ends, however it ends
    lock_folder(tmp_path).close()


def test_a_second_convert_on_the_same_folder_is_refused_in_one_line(dsocr, tmp_path):
    (tmp_path / "in").mkdir()
    make_pdf(tmp_path / "in" / "a.pdf", 1)
    held = lock_folder(tmp_path / "out")  # a first run, busy
    try:
        second = dsocr("convert", tmp_path / "in", "-o", f"{tmp_path / 'out'}/", "--device", "cpu")
    finally:
        held.close()
    assert second.code == 1 and "another dsocr convert is writing to this folder" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "a.md").exists()


def test_temporaries_a_killed_write_left_are_removed(tmp_path):
    report = converted(tmp_path, "a.pdf")
    stale = [tmp_path / ".a.md.1a2b3c4d.tmp", report.target.figures / ".p1_fig1.png.00ff00ff.tmp",
             tmp_path / ".a_layout_p2.png.0badcafe.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    others = [tmp_path / ".a.md.notours.tmp", tmp_path / ".b.md.1a2b3c4d.tmp"]  # not write_atomic's, or not a's
    for path in others:
        path.write_bytes(b"someone else's")
    assert remove_temporaries([report.target]) == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)


def test_a_rerun_exits_1_while_damage_remains_and_retry_incomplete_redoes_it(dsocr, tiny_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    make_pdf(tmp_path / "in" / "a.pdf", 2)
    out = tmp_path / "out"
    args = ("convert", tmp_path / "in", "-o", f"{out}/", "--model", tiny_checkpoint, *TINY, "-v")
    out.mkdir()
    (out / ".a.md.deadbeef.tmp").write_text("left by a killed run")
    first = dsocr(*args)
    assert first.code == 1 and "incomplete (kept" in first.stderr, first.stderr  # 6 tokens: unfinished
    assert not list(out.rglob(".*.tmp"))
    again = dsocr(*args)
    assert again.code == 1, again.stderr
    assert "a.pdf: left damaged by an earlier run (2 pages incomplete); --retry-incomplete" in again.stderr
    assert "0 converted" in again.stderr
    retried = dsocr(*args, "--retry-incomplete")
    assert retried.code == 1 and "1 converted (2 pages" in retried.stderr, retried.stderr
    states = [json.loads(line)["state"] for line in (out / MANIFEST_NAME).read_text().splitlines()]
    assert states == ["incomplete", "incomplete"]


def test_a_failed_manifest_write_costs_each_document_one_line_and_the_batch_goes_on(dsocr, tiny_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        make_pdf(tmp_path / "in" / f"{name}.pdf", 1)
    out = tmp_path / "out"
    (out / MANIFEST_NAME).mkdir(parents=True)
    result = dsocr("convert", tmp_path / "in", "-o", f"{out}/", "--model", tiny_checkpoint, *TINY)
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert "a.pdf: cannot record it in" in result.stderr and "b.pdf: cannot record it in" in result.stderr
    assert "2 failed" in result.stderr
    assert (out / "a.md").is_file() and (out / "b.md").is_file()


def test_a_per_image_write_error_costs_that_image_alone(dsocr, tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (32, 32), "white").save(tmp_path / f"{name}.png")
        (raw / f"{name}.txt").write_text(f"text of {name}\n")
    out = tmp_path / "out"
    (out / "b.txt").mkdir(parents=True)  # b's file cannot be written
    result = dsocr("ocr", *(tmp_path / f"{n}.png" for n in "abc"), "--from-raw", raw, "-o", f"{out}/")
    assert result.code == 1 and "Traceback" not in result.stderr, result.stderr
    assert "b.png: cannot write" in result.stderr
    assert (out / "a.txt").read_text() == "text of a\n" and (out / "c.txt").read_text() == "text of c\n"


def test_retry_incomplete_runs_only_the_flagged_pages_and_rewrites_the_document(dsocr, tiny_checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    make_pdf(tmp_path / "in" / "a.pdf", 2)
    out = tmp_path / "out"
    args = ("convert", tmp_path / "in", "-o", f"{out}/", "--model", tiny_checkpoint, *TINY, "--keep-raw")
    assert dsocr(*args).code == 1  # both pages stop at 6 tokens: incomplete
    kept = out / ".a.md.kept.json"
    assert json.loads(kept.read_text()) == {"pages": []}
    # as if page 1 had been read well: the retry keeps it and runs page 2 alone
    kept.write_text(json.dumps({"pages": [{"page": 1, "raw": "Kept page one.", "finish_reason": "eos",
                                           "retried": False, "size": [600, 800]}]}))
    retried = dsocr(*args, "--retry-incomplete")
    assert retried.code == 1 and "page 2 incomplete" in retried.stderr, retried.stderr
    assert (out / "a.md").read_text().startswith("Kept page one.")
    assert (out / "a_raw" / "page-0001.txt").read_text() == "Kept page one."
    assert sorted(p.name for p in (out / "a_raw").iterdir()) == ["page-0001.txt", "page-0002.length.txt"]
