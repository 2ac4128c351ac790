"""mmindex: search and question image and text collections with multimodal models.

The public API is loaded on first use, so `import mmindex` (and `mmindex --help`) does not
pull in torch, FAISS or PyArrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
    "Hit": "mmindex.search.searcher",
    "Index": "mmindex.search.searcher",
    "open_index": "mmindex.search.searcher",
    "IngestConfig": "mmindex.ingestion.config",
    "IngestSummary": "mmindex.ingestion.run",
    "ingest": "mmindex.ingestion.run",
    "MmindexError": "mmindex.errors",
}

__all__ = ["Hit", "Index", "IngestConfig", "IngestSummary", "MmindexError", "ingest", "open_index"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from mmindex.errors import MmindexError
    from mmindex.ingestion.config import IngestConfig
    from mmindex.ingestion.run import IngestSummary, ingest
    from mmindex.search.searcher import Hit, Index, open_index


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmindex' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
