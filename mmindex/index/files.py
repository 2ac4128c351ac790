"""The files an index was built from, read only while they are still the indexed file.

A row records the file's size, mtime and SHA-256. The bytes are read once, checked against
all three, and are then exactly what the caller gets: a path re-pointed after the check
cannot slip other bytes in, and a symlink re-pointed to /etc/passwd (whatever its mtime)
never passes, since its content is not the indexed file's."""

from __future__ import annotations

import hashlib
import os
import stat

from mmindex.errors import SourceFileChangedError


def read_indexed_file(row: dict) -> bytes:
    """The bytes of an indexed file (a row with path, size, mtime_ns, sha256), or
    SourceFileChangedError; FileNotFoundError when nothing is there any more."""
    # O_NONBLOCK: a path re-pointed at a FIFO must not hang the server in open().
    fd = os.open(row["path"], os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)  # of what was opened, not of whatever the path names by now
        if not stat.S_ISREG(st.st_mode):
            raise SourceFileChangedError("is no longer a regular file")
        if (st.st_size, st.st_mtime_ns) != (row["size"], row["mtime_ns"]):
            raise SourceFileChangedError("has another size or modification time than the indexed file")
        data = handle.read(st.st_size + 1)  # one byte more shows a file still growing
    if len(data) != row["size"] or hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise SourceFileChangedError("holds other bytes than the indexed file")
    return data
