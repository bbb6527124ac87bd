"""--ray: local Ray with two CPU engines converts a folder (file:// in and out) exactly as one
engine does; without Ray installed, one line says how to get it."""
from __future__ import annotations

import sys

import pytest

from dsocr_cli.cli import ray_address_given
from dsocr_cli.errors import DsocrError
from conftest import convert_folder, outputs_of


def test_bare_ray_means_the_local_ray():
    assert ray_address_given(["convert", "--ray", "in/", "-o", "out/"]) == ["convert", "--ray", "local", "in/", "-o", "out/"]
    assert ray_address_given(["convert", "in/", "--ray"]) == ["convert", "in/", "--ray", "local"]
    for address in ("auto", "ray://head:10001", "10.0.0.5:6379"):
        assert ray_address_given(["convert", "--ray", address, "in/"]) == ["convert", "--ray", address, "in/"]


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from dsocr_cli.ray_pipeline import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DsocrError, match=r'pip install "dsocr\[ray\]"'):
        import_ray()


def test_ray_converts_a_folder_as_one_engine_does(scale_folder, tiny_checkpoint, one_engine_outputs, tmp_path):
    pytest.importorskip("ray.data")
    out = tmp_path / "out"
    result = convert_folder(f"file://{scale_folder}", f"file://{out}", tiny_checkpoint, "--ray")
    assert result.returncode in (0, 1), result.stderr
    assert "6 converted (12 pages" in result.stderr
    assert outputs_of(out) == one_engine_outputs
