"""Where an index lives: a POSIX directory, named by a path or a `file://` URI.

The root is resolved through `pyarrow.fs` (the filesystem layer Ray Data and Parquet use), so
the driver and every Ray worker read the same string the same way: the driver hands workers
`root_uri(root)`, and a worker opens its shard through `filesystem(uri)`. A commit renames
`manifest.json` into place and a writer holds an `flock`; object stores (`s3://`, `gs://`, …)
offer neither, so they are refused with what works instead (docs/decisions.md)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from mmindex.errors import UserInputError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class UnsupportedStorageError(UserInputError):
    """The index root is on a storage that cannot commit an index atomically."""


def index_root(value: str | Path) -> Path:
    """The local directory an index root names: a path, or a `file://` URI (also in the
    `file:/x` form a Path makes of it). Any other scheme raises UnsupportedStorageError."""
    text = str(value)
    match = _SCHEME.match(text)
    if not match:
        return Path(text).expanduser().absolute()
    scheme = match.group(1).lower()
    if scheme != "file":
        raise UnsupportedStorageError(
            f"cannot keep an index at {text}: mmindex commits an index by renaming its "
            f"manifest atomically and holds a file lock while writing, which {scheme}:// "
            "storage does not offer. Put the index on a POSIX filesystem that every Ray node "
            "mounts at the same path (a local disk for one machine; NFS, CephFS, Lustre or "
            "another shared mount with atomic rename for a cluster) and give that path or a "
            "file:// URI")
    parsed = urlparse(text)
    if parsed.netloc not in ("", "localhost"):
        raise UnsupportedStorageError(f"cannot keep an index at {text}: a file:// URI names "
                                      "this machine's files (file:///path), not a host's")
    _, path = filesystem(Path(unquote(parsed.path)).absolute().as_uri())
    return Path(path)


def root_uri(root: Path) -> str:
    """The string a worker gets for an index root (a file:// URI of an absolute path)."""
    return Path(root).absolute().as_uri()


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) for a root URI or path."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)
