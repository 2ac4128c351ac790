"""mmindex: search and question image and text collections with multimodal models."""

from mmindex.config import IngestConfig
from mmindex.errors import MmindexError
from mmindex.ingest import IngestSummary, ingest
from mmindex.search import Hit, Index, open_index

__all__ = ["Hit", "Index", "IngestConfig", "IngestSummary", "MmindexError", "ingest",
           "open_index"]
__version__ = "0.1.0"
