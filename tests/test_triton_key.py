"""Triton's version hash is computed once per installed Triton, not once per process."""
import os
import sys
import types

import pytest

from dsocr_cli.triton_key import remember_triton_key


@pytest.fixture
def fake_triton(tmp_path, monkeypatch):
    """A stand-in `triton` package whose hash function counts its calls."""
    package = tmp_path / "triton"
    (package / "_C").mkdir(parents=True)
    (package / "_C" / "libtriton.so").write_bytes(b"library v1")
    calls = []

    def triton_key():
        calls.append(1)
        return f"hash-{(package / '_C' / 'libtriton.so').read_bytes().decode()}"

    triton = types.ModuleType("triton")
    triton.__file__ = str(package / "__init__.py")
    triton.__version__ = "9.9.9"
    triton.knobs = types.SimpleNamespace(cache=types.SimpleNamespace(dir=str(tmp_path / "cache")))
    runtime = types.ModuleType("triton.runtime")
    cache = types.ModuleType("triton.runtime.cache")
    triton.runtime, runtime.cache = runtime, cache

    def new_process():
        """What a fresh process sees: Triton's own (uncached) function, then our patch."""
        cache.triton_key = triton_key
        remember_triton_key()
        return cache.triton_key

    for name, module in (("triton", triton), ("triton.runtime", runtime), ("triton.runtime.cache", cache)):
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(new_process=new_process, calls=calls, library=package / "_C" / "libtriton.so",
                                 cache=tmp_path / "cache")


def test_a_second_process_reads_the_hash_the_first_computed(fake_triton):
    assert fake_triton.new_process()() == "hash-library v1"
    assert fake_triton.new_process()() == "hash-library v1"
    assert len(fake_triton.calls) == 1
    assert len(list(fake_triton.cache.iterdir())) == 1


def test_a_reinstalled_triton_is_hashed_again(fake_triton):
    fake_triton.new_process()()
    fake_triton.library.write_bytes(b"library v2, longer")
    stat = fake_triton.library.stat()
    os.utime(fake_triton.library, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert fake_triton.new_process()() == "hash-library v2, longer"
    assert len(fake_triton.calls) == 2


def test_a_read_only_cache_still_gives_the_hash(fake_triton, monkeypatch):
    fake_triton.cache.write_text("a file where the folder should be")
    key = fake_triton.new_process()
    assert key() == "hash-library v1" and key() == "hash-library v1"
    assert len(fake_triton.calls) == 1  # once per process, as Triton's own lru_cache did


def test_patching_twice_keeps_one_layer(fake_triton):
    key = fake_triton.new_process()
    remember_triton_key()
    assert sys.modules["triton.runtime.cache"].triton_key is key
