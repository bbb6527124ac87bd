"""Outputs: all-or-nothing writes, and names that never clash, overwrite an input or get mangled."""
from __future__ import annotations

import errno
import os
from pathlib import Path, PurePath
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from PIL import Image

from dsocr_cli.documents import Source, expand_inputs
from dsocr_cli.errors import DsocrError
from dsocr_cli.writers import is_done, plan_outputs, save_image, write_atomic


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# --- write_atomic / save_image --------------------------------------------------------------------

def test_write_atomic_writes_text_and_bytes_creating_folders(tmp_path):
    write_atomic(tmp_path / "a" / "b" / "page.md", "naïve café\n")
    write_atomic(tmp_path / "blob", b"\x00\x01")
    assert (tmp_path / "a" / "b" / "page.md").read_bytes() == "naïve café\n".encode()
    assert (tmp_path / "blob").read_bytes() == b"\x00\x01"
    write_atomic(tmp_path / "blob", "new")
    assert (tmp_path / "blob").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["a", "blob"]  # no temporary file left behind


def test_the_temporary_file_is_beside_the_target_and_flushed_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or fsync(fd))
    monkeypatch.setattr(os, "replace",
                        lambda src, dst: events.append(("replace", Path(src).parent)) or replace(src, dst))
    write_atomic(tmp_path / "out.md", "text")
    assert events == ["fsync", ("replace", tmp_path)]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch, failing):
    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(DsocrError, match="cannot write .*new.md: No space left"):
        write_atomic(tmp_path / "new.md", "x" * 100_000)
    assert os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    (tmp_path / "old.md").write_text("previous run")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DsocrError):
        write_atomic(tmp_path / "old.md", "half a page")
    assert os.listdir(tmp_path) == ["old.md"]
    assert (tmp_path / "old.md").read_text() == "previous run"


def test_an_interrupted_write_cleans_up_and_is_not_swallowed(tmp_path, monkeypatch):
    def interrupt(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "page.md", "text")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "page.md", "text")
    finally:
        os.umask(umask)
    assert (tmp_path / "page.md").stat().st_mode & 0o777 == 0o644


def test_save_image_writes_the_format_of_the_extension(tmp_path):
    save_image(tmp_path / "figs" / "p1_fig1.png", Image.new("RGB", (5, 4), (1, 2, 3)))
    save_image(tmp_path / "figs" / "p1_fig2.jpg", Image.new("RGBA", (5, 4), (9, 9, 9, 0)))
    save_image(tmp_path / "figs" / "p1_fig3.img", Image.new("L", (5, 4)), "PNG")
    with Image.open(tmp_path / "figs" / "p1_fig1.png") as png:
        assert (png.format, png.size, png.getpixel((0, 0))) == ("PNG", (5, 4), (1, 2, 3))
    with Image.open(tmp_path / "figs" / "p1_fig2.jpg") as jpeg, \
            Image.open(tmp_path / "figs" / "p1_fig3.img") as other:
        assert (jpeg.format, other.format) == ("JPEG", "PNG")
    with pytest.raises(DsocrError, match="image format"):
        save_image(tmp_path / "figs" / "p1_fig4.xyz", Image.new("RGB", (5, 4)))
    assert sorted(os.listdir(tmp_path / "figs")) == ["p1_fig1.png", "p1_fig2.jpg", "p1_fig3.img"]


# --- plan_outputs ---------------------------------------------------------------------------------

def sources(tmp_path: Path, *names: str) -> list[Source]:
    """Sources for files named directly (created empty, so they exist)."""
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    return expand_inputs([str(tmp_path / name) for name in names], None)


def relative(path: Path | None, root: Path) -> str | None:
    return None if path is None else path.relative_to(root).as_posix()


def markdowns(targets, root: Path) -> list[str | None]:
    return [relative(t.markdown, root) for t in targets]


def test_one_input_to_a_named_file_puts_the_rest_beside_it(tmp_path):
    [target] = plan_outputs(sources(tmp_path, "in/report.pdf"), str(tmp_path / "out" / "report.md"))
    assert [relative(p, tmp_path) for p in (target.markdown, target.figures, target.layout, target.annotation,
                                            target.raw)] == ["out/report.md", "out/report_images",
                                                             "out/report_layout.json", "out/report_layout.pdf",
                                                             "out/report_raw"]
    assert target.figure_link == "report_images/"


def test_a_named_file_needs_exactly_one_input_and_must_not_be_the_input(tmp_path):
    with pytest.raises(DsocrError, match="2 inputs need an output folder"):
        plan_outputs(sources(tmp_path, "a.pdf", "b.pdf"), str(tmp_path / "report.md"))
    with pytest.raises(DsocrError, match="overwrite the input"):
        plan_outputs(sources(tmp_path, "a.pdf"), str(tmp_path / "a.pdf"))


def test_stdout_takes_the_markdown_and_the_current_folder_the_rest(tmp_path):
    [target] = plan_outputs(sources(tmp_path, "scans/My Report.pdf"), "-")
    assert target.markdown is None and not is_done(target)
    assert (target.figures, target.layout) == (Path("My Report_images"), Path("My Report_layout.json"))
    assert target.figure_link == "My%20Report_images/"
    with pytest.raises(DsocrError, match="output folder"):
        plan_outputs(sources(tmp_path, "a.pdf", "b.pdf"), "-")


def test_an_output_folder_keeps_the_relative_paths_of_a_folder_argument(tmp_path):
    for name in ["scans/2024/jan.pdf", "scans/2024/feb.png", "scans/cover.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    targets = plan_outputs(expand_inputs([str(tmp_path / "scans")], None), str(tmp_path / "out") + "/")
    assert markdowns(targets, tmp_path) == ["out/2024/feb.md", "out/2024/jan.md", "out/cover.md"]
    assert relative(targets[0].figures, tmp_path) == "out/2024/feb_images"
    assert targets[0].figure_link == "feb_images/"


def test_an_existing_folder_needs_no_trailing_slash(tmp_path):
    (tmp_path / "out").mkdir()
    targets = plan_outputs(sources(tmp_path, "a.pdf", "b.pdf"), str(tmp_path / "out"))
    assert markdowns(targets, tmp_path) == ["out/a.md", "out/b.md"]


def test_names_are_never_mangled(tmp_path):
    given = sources(tmp_path, "pdf_notes.pdf", "v1.2.final.png", "pdf.pdf")
    targets = plan_outputs(given, str(tmp_path / "o") + "/")
    assert markdowns(targets, tmp_path) == ["o/pdf_notes.md", "o/v1.2.final.md", "o/pdf.md"]


def test_inputs_that_would_share_a_name_keep_their_extension_then_get_numbers(tmp_path):
    given = sources(tmp_path, "a.pdf", "a.png", "x/a.pdf", "b.PDF", "B.pdf", "c.pdf")
    assert markdowns(plan_outputs(given, str(tmp_path / "o") + "/"), tmp_path) == [
        "o/a.pdf.md", "o/a.png.md", "o/a.pdf-2.md", "o/b.md", "o/B-2.md", "o/c.md"]


def test_by_default_outputs_go_beside_each_input(tmp_path):
    targets = plan_outputs(sources(tmp_path, "one/a.pdf", "two/a.pdf", "two/a.jpg"), None)
    assert markdowns(targets, tmp_path) == ["one/a.md", "two/a.pdf.md", "two/a.jpg.md"]
    assert relative(targets[1].figures, tmp_path) == "two/a.pdf_images"


def test_outputs_never_overwrite_an_input(tmp_path):
    # a.pdf's annotated layout would be a_layout.pdf, which is an input here
    targets = plan_outputs(sources(tmp_path, "a.pdf", "a_layout.pdf"), None)
    assert markdowns(targets, tmp_path) == ["a-2.md", "a_layout.md"]
    assert relative(targets[0].annotation, tmp_path) == "a-2_layout.pdf"


def test_a_folder_argument_without_an_output_folder_is_refused(tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.png").touch()
    with pytest.raises(DsocrError, match="add -o DIR/"):
        plan_outputs(expand_inputs([str(tmp_path / "scans")], None), None)


def test_no_two_planned_paths_are_the_same_file(tmp_path):
    given = sources(tmp_path, "a.pdf", "A.png", "a_images.pdf", "a_layout.pdf", "a.pdf.png", "x/a.pdf",
                    "a-2.pdf")
    for output in (None, str(tmp_path / "o") + "/"):
        targets = plan_outputs(given, output)
        keys = [os.path.normcase(str(p.resolve())).casefold() for t in targets for p in t.paths()]
        keys += [os.path.normcase(str(s.path.resolve())).casefold() for s in given]
        assert len(keys) == len(set(keys))


def test_sources_with_errors_get_no_target(tmp_path):
    missing = Source(tmp_path / "gone.pdf", PurePath("gone.pdf"), error="no such file")
    given = sources(tmp_path, "a.pdf") + [missing]
    assert [t.source.path.name for t in plan_outputs(given, str(tmp_path / "o") + "/")] == ["a.pdf"]


def test_is_done_once_the_markdown_exists(tmp_path):
    [target] = plan_outputs(sources(tmp_path, "a.pdf"), str(tmp_path / "o") + "/")
    assert not is_done(target)
    write_atomic(target.markdown, "# done\n")
    assert is_done(target)


@pytest.mark.parametrize("name", ["My Report (final) #2.pdf", "50% [draft]?.png", "报告 <v2>.jpg",
                                  "a\\b.tif"])
def test_figure_links_lead_to_the_figure_folder_whatever_the_name(tmp_path, name):
    [target] = plan_outputs(sources(tmp_path, name), str(tmp_path / "o") + "/")
    tokens = MarkdownIt().parseInline(f"![figure]({target.figure_link}p1_fig1.png)")[0].children
    assert [t.type for t in tokens] == ["image"]
    assert unquote(tokens[0].attrs["src"]) == f"{target.figures.name}/p1_fig1.png"
