"""Inputs and outputs given as URIs (file://, s3://, gs://, memory://: anything fsspec reads).

file:// is a local path. Other stores are worked through local copies: inputs are downloaded
before planning, and the output folder is staged locally: its manifest and the finished outputs
it lists are fetched first (so resuming works as on a disk), and each document's outputs, then
the manifest, are uploaded as soon as the document is recorded. Object stores have no partial
files: an upload is all or nothing, like the local writes.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import DsocrError
from .manifest import KEPT, MANIFESTS, Manifest, inside, manifest_name

_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]+://")  # two letters at least: C:\ is a path


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


def is_remote(text: str) -> bool:
    return is_uri(text) and not text.startswith("file://")


def local_path(text: str) -> str:
    """A file:// URI as a local path (a trailing / kept: it marks an output folder); others as given."""
    if not text.startswith("file://"):
        return text
    return unquote(urlparse(text).path)


def _filesystem(uri: str):
    try:
        import fsspec

        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise DsocrError(f"{uri}: cannot open this location: {exc}") from None


def fetch_input(uri: str, into: Path) -> str:
    """Download a remote input (file or folder) below `into`; the local path to convert instead."""
    fs, path = _filesystem(uri)
    local = into / Path(path.rstrip("/")).name
    try:
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(local), recursive=True)
        elif fs.isfile(path):
            fs.get_file(path, str(local))
        else:
            return uri  # reported as missing, with the rest of the batch
    except OSError as exc:
        raise DsocrError(f"{uri}: cannot download it: {exc}") from None
    return str(local)


class RemoteFolder:
    """An output folder in a store, worked through a local staging folder. Every shard's manifest is
    fetched; this run uploads only its own (`manifest`, as manifest_name names it). Names read back
    from a manifest are data: one that would leave the folder is not fetched."""

    def __init__(self, uri: str, manifest: str = manifest_name()):
        self.uri = uri
        self.manifest = manifest
        self.fs, self.root = _filesystem(uri)
        self.root = self.root.rstrip("/")
        self.local = Path(tempfile.mkdtemp(prefix="dsocr-out-"))
        try:
            found = self.fs.glob(f"{self.root}/{MANIFESTS}")
        except OSError:
            found = []
        for path in found:
            self._pull(Path(path).name)
        for entry in Manifest(self.local).entries.values():
            outputs = entry.get("outputs") if entry.get("state") in KEPT else None
            for name in outputs if isinstance(outputs, dict) else ():
                if inside(name) and self.fs.isfile(f"{self.root}/{name}"):
                    self._pull(name)

    def push(self, names: list[str]) -> None:
        """Upload these outputs, then this run's manifest that lists them."""
        for name in [*names, self.manifest]:
            try:
                self.fs.makedirs(f"{self.root}/{Path(name).parent.as_posix()}".rstrip("/."), exist_ok=True)
                self.fs.put_file(str(self.local / name), f"{self.root}/{name}")
            except OSError as exc:
                raise DsocrError(f"{self.uri}: cannot upload {name}: {exc}") from None

    def _pull(self, name: str) -> None:
        (self.local / name).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(f"{self.root}/{name}", str(self.local / name))
