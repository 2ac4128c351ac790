"""Where mmindex keeps things on the user's machine."""

from __future__ import annotations

import os
from pathlib import Path

INDEX_ENV = "MMINDEX_INDEX"


def default_index_dir() -> Path:
    """MMINDEX_INDEX, else the user's data directory, so search works from any folder."""
    if os.environ.get(INDEX_ENV):
        return Path(os.environ[INDEX_ENV]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("mmindex")) / "index"
