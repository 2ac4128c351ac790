"""Document retrieval: recall@1/5 of a make-documents split's queries over an index of it,
by the text layer (lexical, vector, hybrid over `texts`), by the page image (vector over
`images`) and by both (hybrid over pages: the page image's vector ranking fused with its
text layer's BM25 ranking).

A hit counts when it is the query's target page: (PDF, page). Hits are mapped to pages
through what the index holds: an images row with a `page` column is that page of its PDF
(PDF ingest); a texts row keyed "p. N" is page N of its PDF (PDF ingest's text layer); a
page PNG of the split and a row of its text/pages.jsonl map through pages.parquet (an
index of `OUT/images OUT/text`, without PDF ingest). "Both" is Index.search's own
images hybrid where the index links pages to their text rows; otherwise it is the same
reciprocal rank fusion (search/lexical.py) of the two page rankings, computed here, and the
report says which.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmindex.core.progress import Progress, no_progress
from mmindex.core.tables import read_table
from mmindex.data.pages import page_of_key
from mmindex.errors import UserInputError
from mmindex.search.lexical import FUSION_DEPTH, reciprocal_rank_fusion

# (name, what it searches, target table, mode)
SYSTEMS = (
    ("text, lexical", "texts", "lexical"),
    ("text, vector", "texts", "vector"),
    ("text, hybrid", "texts", "hybrid"),
    ("page image, vector", "images", "vector"),
    ("both, hybrid", "images", "hybrid"),
)
TEXT_CORPUS = "text/pages.jsonl"


@dataclass(frozen=True)
class DocumentsEvalConfig:
    split: Path  # a make-documents folder
    index: Path  # an index of it (OUT/pdf, or OUT/images with OUT/text)
    limit: int | None = None  # queries used, from the first
    depth: int = FUSION_DEPTH  # hits each ranking keeps


@dataclass(frozen=True)
class SystemScores:
    recall_at_1: float
    recall_at_5: float
    n_queries: int
    by_kind: dict[str, tuple[float, float]] = field(default_factory=dict)  # kind -> (r@1, r@5)


@dataclass(frozen=True)
class DocumentsReport:
    split: str
    index: str
    model: str
    n_queries: int
    n_pages_indexed: dict[str, int]
    both_by: str  # "Index.search" or "fused in the eval"
    systems: dict[str, SystemScores]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


class PageMap:
    """(pdf, page) of an index row, through the split's tables; None when not a page."""

    def __init__(self, split: Path):
        self.split = split.resolve()
        pages = read_table(self.split / "pages.parquet").rows
        self.pages = [row for _, row in pages]
        self.units = [(row["pdf"], int(row["page"])) for row in self.pages]  # by row number
        self.position = {unit: i for i, unit in enumerate(self.units)}
        self.by_image = {row["image"]: unit for row, unit in zip(self.pages, self.units)}

    def relative(self, path: str) -> str | None:
        try:
            return Path(path).resolve().relative_to(self.split).as_posix()
        except ValueError:
            return None

    def of_image(self, path: str, page: int | None) -> tuple[str, int] | None:
        relative = self.relative(path)
        if relative is None:
            return None
        return (relative, page) if page is not None else self.by_image.get(relative)

    def of_text(self, path: str, key: str | None) -> tuple[str, int] | None:
        relative = self.relative(path)
        if relative is None:
            return None
        page = page_of_key(key)
        if page is not None:
            return relative, page
        if relative == TEXT_CORPUS and (key or "").startswith("row "):
            row = self.pages[int(key.removeprefix("row "))]
            return row["pdf"], int(row["page"])
        return None


def run_documents_eval(config: DocumentsEvalConfig,
                       progress: Progress = no_progress) -> DocumentsReport:
    from mmindex.search.searcher import open_index

    split = Path(config.split).expanduser()
    if not (split / "queries.parquet").is_file():
        raise UserInputError(f"{split} is not a make-documents split: no queries.parquet")
    queries = [row for _, row in read_table(split / "queries.parquet").rows]
    queries = queries[: config.limit] if config.limit else queries
    index, pages = open_index(config.index), PageMap(split)
    images = index.rows("images")
    # PDF ingest: pages (images rows with a page number) linked to their text rows
    linked = "page" in images.column_names and images.column("page").null_count < len(images)
    page_of = dict(zip(images.column("id").to_pylist(), images.column("page").to_pylist())) \
        if linked else {}
    started = time.perf_counter()
    found: dict[str, list[list]] = defaultdict(list)
    for done, query in enumerate(queries, start=1):
        for name, ranking in _rankings(index, pages, query["query"], config.depth,
                                       linked, page_of).items():
            found[name].append(ranking)
        progress("queries", done, len(queries))
    targets = [(q["pdf"], int(q["page"])) for q in queries]
    kinds = [q["kind"] for q in queries]
    systems = {name: _scores(found[name], targets, kinds) for name, _, _ in SYSTEMS}
    return DocumentsReport(
        str(split), str(config.index), index.manifest.model.spec, len(queries),
        {t: index.rows(t).num_rows for t in ("images", "texts")},
        "Index.search" if linked else "fused in the eval", systems,
        time.perf_counter() - started)


def _rankings(index, pages: PageMap, query: str, depth: int, linked: bool,
              page_of: dict) -> dict:
    """Each system's ranking of pages for one query, best first, without repeats."""
    rankings = {}
    for name, target, mode in SYSTEMS:
        if name == "both, hybrid" and not linked:
            continue
        hits = index.search(query, target=target, mode=mode, k=depth) \
            if index.rows(target).num_rows else []
        rankings[name] = _unique([pages.of_image(h.path, page_of.get(h.id))
                                  if target == "images" else pages.of_text(h.path, h.key)
                                  for h in hits])
    if not linked:  # the same fusion as Index.search's, over pages.parquet row numbers
        fused = reciprocal_rank_fusion(
            [[pages.position[u] for u in rankings[name] if u in pages.position]
             for name in ("page image, vector", "text, lexical")], depth)
        rankings["both, hybrid"] = [pages.units[f.id] for f in fused]
    return rankings


def _unique(units: list) -> list:
    seen, kept = set(), []
    for unit in units:
        if unit is not None and unit not in seen:
            seen.add(unit)
            kept.append(unit)
    return kept


def _scores(rankings: list[list], targets: list, kinds: list[str]) -> SystemScores:
    ranks = [ranking.index(t) + 1 if t in ranking else None
             for ranking, t in zip(rankings, targets)]
    by_kind = {}
    for kind in sorted(set(kinds)):
        chosen = [r for r, k in zip(ranks, kinds) if k == kind]
        by_kind[kind] = (_recall(chosen, 1), _recall(chosen, 5))
    return SystemScores(_recall(ranks, 1), _recall(ranks, 5), len(ranks), by_kind)


def _recall(ranks: list, k: int) -> float:
    return sum(r is not None and r <= k for r in ranks) / max(len(ranks), 1)


def format_documents(report: DocumentsReport) -> str:
    counts = report.n_pages_indexed
    title = (f"{report.n_queries} queries over {report.index} ({report.model}; "
             f"{counts['images']} images, {counts['texts']} texts rows; both: "
             f"{report.both_by}), {report.seconds:.0f} s")
    lines = [title, f"{'system':<20} {'R@1':>6} {'R@5':>6}"]
    for name, scores in report.systems.items():
        lines.append(f"{name:<20} {scores.recall_at_1:>6.3f} {scores.recall_at_5:>6.3f}")
    return "\n".join(lines) + "\n"
