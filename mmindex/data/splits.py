"""Writing a generated split (scenes, charts) in the tables make-shapes writes, so ingest,
eval retrieval, train-projector and eval vqa read it unchanged:

- pairs.parquet      image, caption, attributes (JSON of what drew the image)
- questions.parquet  image, question, answer, kind: the questions with one exact answer
- code.parquet       image, question, answer, kind "code": the program that drew the image
- qa_and_code.parquet both, for one train-projector run that learns to answer and to redraw

Code rows are kept out of questions.parquet because `eval vqa` answers in a few tokens and
scores exact match; `eval code` reads code.parquet instead.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmindex.errors import UserInputError

CODE_KIND = "code"
TABLES = ("pairs.parquet", "questions.parquet", "code.parquet", "qa_and_code.parquet")
QUESTION_COLUMNS = ("image", "question", "answer", "kind")


@dataclass(frozen=True)
class SplitSummary:
    out_dir: Path
    n_images: int
    n_questions: int
    questions_by_kind: dict[str, int]
    n_programs: int


def check_split_arguments(n: int, seed: int, size: int) -> None:
    if n < 1:
        raise UserInputError(f"--n must be at least 1, got {n}")
    if seed < 0:
        raise UserInputError(f"--seed must be zero or positive, got {seed}")
    if size < 32:
        raise UserInputError(f"--size must be at least 32 pixels so objects stay legible, "
                             f"got {size}")


def prepare_out_dir(out: Path, overwrite: bool, meta_name: str) -> Path:
    """An empty out/images folder; with overwrite, only files a generator writes are removed,
    so a wrong path cannot lose anything else."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserInputError(f"{out} is not empty; choose a new folder or pass --overwrite")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in TABLES + (meta_name,):
            (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out


def write_split(out: Path, examples: Iterable[tuple], kinds: Sequence[str], meta: dict,
                meta_name: str) -> SplitSummary:
    """Save each (name, image, caption, attributes, questions, code question) and the tables."""
    pairs, questions, code = [], [], []
    for name, image, caption, attributes, asked, program in examples:
        image.save(out / name, compress_level=6)
        pairs.append((name, caption, attributes))
        questions += [(name, q.question, q.answer, q.kind) for q in asked]
        code.append((name, program.question, program.answer, program.kind))
    write_table(out / "pairs.parquet", ("image", "caption", "attributes"), pairs)
    write_table(out / "questions.parquet", QUESTION_COLUMNS, questions)
    write_table(out / "code.parquet", QUESTION_COLUMNS, code)
    write_table(out / "qa_and_code.parquet", QUESTION_COLUMNS, questions + code)
    counts = Counter(q[3] for q in questions)
    summary = SplitSummary(out, len(pairs), len(questions),
                           {kind: counts[kind] for kind in kinds}, len(code))
    meta = meta | {"n_images": len(pairs), "n_questions": len(questions),
                   "questions_by_kind": summary.questions_by_kind}
    (out / meta_name).write_text(json.dumps(meta, indent=2) + "\n")
    return summary


def write_table(path: Path, columns: Sequence[str], rows: list[tuple]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {name: pa.array([row[i] for row in rows], pa.string())
              for i, name in enumerate(columns)}
    pq.write_table(pa.table(arrays), path)

