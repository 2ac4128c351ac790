"""Field questions of a make-documents split ("What is the total?") answered through `ask`'s
own code, and scored against the printed value (`mmindex eval document-questions`).

Conditions, each answered by the same answerer (`--generator`, ask/answerers.py):

- text layer, oracle page: the question with the page's own text layer as passage [T1],
  in ask's prompt (`with_passages`): reading alone, retrieval left out. The text is the
  index's passage for that page (what `ask` would be given), else the split's page text.
- page image, oracle page / both, oracle page: the page image alone, and the image with
  its text layer; only for an answerer that reads images (a projector or a pretrained
  vision-language model). A text-only answerer is not shown pixels it cannot read, and
  the report lists these conditions as not measured.
- ask: `Generator.ask` over the index, one joint answer. The question names its document
  with one of the split's retrieval queries for it ("invoice INV-2022-2994: What is the
  total?"), the first whose text does not contain the answer, so retrieval can find the
  document and the question does not give the answer away.

Scores: exact match of the normalised reply and answer (search/lexical.py `normalized`:
"1,250.00" and "1250.00" are one), "contains" (the normalised answer appears in the reply as
whole words: a small model answers "The total is 1,250.00."), per question kind; for ask also
whether [T1] is the answer's page and its document, whether the answer's page was among
the passages, and how often it abstained.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmindex.ask.config import AskConfig
from mmindex.ask.generator import Generator, Passage, with_passages
from mmindex.core.progress import Progress, no_progress
from mmindex.core.tables import read_table
from mmindex.errors import UserInputError
from mmindex.eval.documents import PageMap
from mmindex.search.lexical import normalized

TEXT_LAYER, PAGE_IMAGE, BOTH, ASK = ("text layer, oracle page", "page image, oracle page",
                                     "both, oracle page", "ask")
IMAGE_CONDITIONS = (PAGE_IMAGE, BOTH)


@dataclass(frozen=True)
class FieldQuestionsConfig:
    split: Path  # a make-documents folder
    per_kind: int | None = None  # questions sampled per kind (seeded); None: all
    kinds: tuple[str, ...] = ()  # only these question kinds; (): all
    seed: int = 0
    oracle: bool = True  # the oracle page's conditions
    ask: bool = True  # the ask condition (retrieval, then reading)
    # one joint answer (k images for an answerer that reads them), two passages
    ask_config: AskConfig = field(default_factory=lambda: AskConfig(
        k=1, texts=2, max_new_tokens=24, joint=True))


@dataclass(frozen=True)
class FieldAnswer:
    """One question answered under one condition."""

    condition: str
    kind: str
    question: str  # as asked (for ask: named after its document)
    answer: str  # the printed value
    reply: str
    pdf: str
    page: int
    new_tokens: int = 0
    abstained: bool = False
    cited: tuple[tuple[str, int] | None, ...] = ()  # (pdf, page) of each passage, [T1] first

    @property
    def exact(self) -> bool:
        return normalized(self.reply) == normalized(self.answer)

    @property
    def contains(self) -> bool:
        return f" {normalized(self.answer)} " in f" {normalized(self.reply)} "


@dataclass(frozen=True)
class ConditionScores:
    n: int
    exact: float
    contains: float
    by_kind: dict[str, dict[str, float]]  # kind -> n, exact, contains
    new_tokens: int
    seconds: float
    cited_page: float | None = None  # [T1] is the answer's (pdf, page)
    cited_document: float | None = None  # [T1] is the answer's pdf
    page_in_passages: float | None = None
    abstained: int | None = None


@dataclass(frozen=True)
class FieldQuestionsReport:
    split: str
    index: str
    generator: str
    n_questions: int
    sampled: str  # "all" or "N per kind, seed S"
    conditions: dict[str, ConditionScores]
    not_measured: dict[str, str]  # condition -> why
    answers: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def run_field_questions(generator: Generator, config: FieldQuestionsConfig,
                        progress: Progress = no_progress) -> FieldQuestionsReport:
    """Every condition the generator's answerer can take, over the split's (sampled)
    questions; UserInputError when the folder is no make-documents split."""
    split = Path(config.split).expanduser()
    for name in ("questions.parquet", "queries.parquet", "pages.parquet"):
        if not (split / name).is_file():
            raise UserInputError(f"{split} is not a make-documents split: no {name} (write "
                                 "one with `mmindex make-documents`)")
    questions = sample_per_kind(_of_kinds(_rows(split / "questions.parquet"), config.kinds),
                                config.per_kind, config.seed)
    pages = PageMap(split)
    reads_images = getattr(generator.answerer, "reads_images", True)
    conditions = _conditions(config, reads_images)
    texts = _page_texts(generator.index, pages) if config.oracle else {}
    names = document_names(_rows(split / "queries.parquet"))
    answers: dict[str, list[FieldAnswer]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    total, done = len(questions) * len(conditions), 0
    for question in questions:
        for condition in conditions:
            started = time.perf_counter()
            answers[condition].append(_answer(generator, config, condition, question, split,
                                              pages, texts, names))
            seconds[condition] += time.perf_counter() - started
            done += 1
            progress("questions", done, total)
    scored = {c: score(answers[c], seconds[c], cited=c == ASK) for c in conditions}
    return FieldQuestionsReport(
        str(split), str(generator.index.root), generator.answerer.name, len(questions),
        f"{config.per_kind} per kind, seed {config.seed}" if config.per_kind else "all",
        scored, _not_measured(config, reads_images, generator.answerer.name),
        [asdict(a) | {"exact": a.exact, "contains": a.contains}
         for c in conditions for a in answers[c]])


def _conditions(config: FieldQuestionsConfig, reads_images: bool) -> list[str]:
    oracle = [TEXT_LAYER, *(IMAGE_CONDITIONS if reads_images else ())] if config.oracle else []
    return oracle + ([ASK] if config.ask else [])


def _not_measured(config: FieldQuestionsConfig, reads_images: bool, name: str) -> dict:
    if reads_images or not config.oracle:
        return {}
    return {c: f"{name} reads text only: it is not shown the page image"
            for c in IMAGE_CONDITIONS}


def _answer(generator: Generator, config: FieldQuestionsConfig, condition: str, row: dict,
            split: Path, pages: PageMap, texts: dict, names: dict) -> FieldAnswer:
    unit = (row["pdf"], int(row["page"]))
    question, limit = row["question"], config.ask_config.max_new_tokens
    base = {"condition": condition, "kind": row["kind"], "answer": row["answer"],
            "pdf": unit[0], "page": unit[1]}
    if condition == ASK:
        named = f"{names[unit[0]](row['answer'])}: {question}"
        answer = generator.ask(named, config.ask_config)
        cited = tuple(pages.of_text(p.path, p.key) for p in answer.passages)
        return FieldAnswer(question=named, reply=answer.text, new_tokens=answer.new_tokens,
                           abstained=answer.abstained, cited=cited, **base)
    image = [split / row["image"]] if condition in IMAGE_CONDITIONS else []
    prompt = question
    if condition != PAGE_IMAGE:
        text = texts.get(unit) or pages.pages[pages.position[unit]]["text"]
        passage = Passage("T1", -1, str(split / unit[0]), f"p. {unit[1]}", text, 1.0)
        prompt = with_passages(question, [passage], images=bool(image))
    reply, new_tokens = generator.answerer.answer(prompt, image, limit)
    return FieldAnswer(question=question, reply=reply, new_tokens=new_tokens, **base)


def _of_kinds(rows: list[dict], kinds: tuple[str, ...]) -> list[dict]:
    known = sorted({row["kind"] for row in rows})
    if unknown := set(kinds) - set(known):
        raise UserInputError(f"no question kind {', '.join(sorted(unknown))} in this split: "
                             f"it has {', '.join(known)}")
    return [row for row in rows if not kinds or row["kind"] in kinds]


def sample_per_kind(rows: list[dict], per_kind: int | None, seed: int) -> list[dict]:
    """At most `per_kind` rows of each kind, drawn with `seed`, in their original order."""
    if not per_kind:
        return rows
    by_kind = defaultdict(list)
    for i, row in enumerate(rows):
        by_kind[row["kind"]].append(i)
    rng = random.Random(seed)
    chosen = {i for kind in sorted(by_kind)
              for i in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))}
    return [row for i, row in enumerate(rows) if i in chosen]


def document_names(queries: list[dict]) -> dict:
    """pdf -> a function giving, for an answer, the document's first retrieval query that
    does not contain it (so naming the document does not give the answer away)."""
    by_pdf = defaultdict(list)
    for query in queries:
        by_pdf[query["pdf"]].append(query["query"])

    def naming(pdf: str):
        def name(answer: str) -> str:
            for query in by_pdf[pdf]:
                if f" {normalized(answer)} " not in f" {normalized(query)} ":
                    return query
            raise UserInputError(f"every retrieval query of {pdf} contains its answer "
                                 f"{answer!r}: the question cannot name its document")
        return name
    return {pdf: naming(pdf) for pdf in by_pdf}


def score(answers: list[FieldAnswer], seconds: float = 0.0, cited: bool = False
          ) -> ConditionScores:
    """Exact and contained answers overall and by kind; with `cited`, the citations too."""
    by_kind = {}
    for kind in sorted({a.kind for a in answers}):
        chosen = [a for a in answers if a.kind == kind]
        by_kind[kind] = {"n": len(chosen), "exact": _share(chosen, "exact"),
                         "contains": _share(chosen, "contains")}
    extra = {}
    if cited:
        n = max(len(answers), 1)
        extra = {
            "cited_page": sum(bool(a.cited) and a.cited[0] == (a.pdf, a.page)
                              for a in answers) / n,
            "cited_document": sum(bool(a.cited) and a.cited[0] is not None
                                  and a.cited[0][0] == a.pdf for a in answers) / n,
            "page_in_passages": sum((a.pdf, a.page) in a.cited for a in answers) / n,
            "abstained": sum(a.abstained for a in answers)}
    return ConditionScores(len(answers), _share(answers, "exact"), _share(answers, "contains"),
                           by_kind, sum(a.new_tokens for a in answers), seconds, **extra)


def _share(answers: list[FieldAnswer], what: str) -> float:
    return sum(getattr(a, what) for a in answers) / max(len(answers), 1)


def _rows(path: Path) -> list[dict]:
    return [row for _, row in read_table(path).rows]


def _page_texts(index, pages: PageMap) -> dict:
    """(pdf, page) -> the index's text of that page (PDF ingest's 'p. N' rows, or the
    split's page corpus)."""
    rows = index.rows("texts")
    texts = {}
    for path, key, text in zip(*(rows.column(c).to_pylist() for c in ("path", "key", "text"))):
        unit = pages.of_text(path, key)
        if unit is not None and text:
            texts[unit] = text
    return texts


def format_field_questions(report: FieldQuestionsReport) -> str:
    title = (f"{report.n_questions} field questions ({report.sampled}) of {report.split}, "
             f"answered by {report.generator}")
    header = (f"{'condition':<26} {'n':>4} {'exact':>6} {'contains':>8} {'[T1] page':>9} "
              f"{'[T1] doc':>8} {'s/q':>5}")
    lines = [title, header]
    for name, s in report.conditions.items():
        page = f"{s.cited_page:>9.3f}" if s.cited_page is not None else f"{'':>9}"
        doc = f"{s.cited_document:>8.3f}" if s.cited_document is not None else f"{'':>8}"
        lines.append(f"{name:<26} {s.n:>4} {s.exact:>6.3f} {s.contains:>8.3f} {page} {doc} "
                     f"{s.seconds / max(s.n, 1):>5.1f}")
    for name, why in report.not_measured.items():
        lines.append(f"{name:<26} not measured: {why}")
    kinds = sorted({k for s in report.conditions.values() for k in s.by_kind})
    if kinds:
        lines.append("exact / contains by kind:")
        lines.append(f"{'condition':<26} " + " ".join(f"{k[:15]:>15}" for k in kinds))
        for name, s in report.conditions.items():
            cells = [f"{s.by_kind[k]['exact']:.2f} / {s.by_kind[k]['contains']:.2f}"
                     if k in s.by_kind else "" for k in kinds]
            lines.append(f"{name:<26} " + " ".join(f"{c:>15}" for c in cells))
    return "\n".join(lines) + "\n"
