"""Property-based fuzzing of the two parsers hostile files reach first: image decoding and
text-corpus parsing. Each must return a usable result or raise its own typed error (DecodeError,
CorpusError) -- never another exception, never hang. Inputs that once broke them live in
tests/data/fuzz_seeds/ and are replayed here on every run."""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmindex.testing import photo
from mmindex.data.images import DecodeError, decode_image
from mmindex.data.scan import (
    IMAGE_EXTENSIONS,
    MAX_DOCUMENT_CHARS,
    TEXT_EXTENSIONS,
    CorpusError,
    read_text_documents,
)

SEEDS = Path(__file__).parent / "fuzz_seeds"
PER_INPUT_SECONDS = 10  # far above any honest decode of these small inputs: a hang fails
EXAMPLES = int(os.environ.get("MMINDEX_FUZZ_EXAMPLES", "150"))  # raise it for a long hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 150, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_MAX_PIXELS = 1 << 22  # keeps decoding of mutated headers quick; the rule is the same
SCRATCH = Path(tempfile.mkdtemp(prefix="mmindex-fuzz-"))


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int):
    """SIGALRM turns a hang into a failure that names the input, instead of a stuck suite."""
    def alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _encoded(fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image = photo(24, 16, 7)
    if fmt == "GIF":
        frames = [image.convert("P"), photo(24, 16, 8).convert("P")]
        frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    else:
        image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


REAL_IMAGES = {
    ".png": _encoded("PNG"),
    ".jpg": _encoded("JPEG", quality=80),
    ".jpeg": _encoded("JPEG", exif=_exif_rotated()),  # the EXIF-transpose path
    ".gif": _encoded("GIF"),
    ".tif": _encoded("TIFF"),
    ".tiff": _encoded("TIFF", compression="tiff_deflate"),
    ".bmp": _encoded("BMP"),
    ".webp": _encoded("WEBP"),
}


def check_decode(data: bytes, suffix: str) -> None:
    """The property: a decoded RGB image, or DecodeError; anything else is a bug."""
    path = SCRATCH / f"input{suffix}"
    path.write_bytes(data)
    with time_limit(PER_INPUT_SECONDS):
        try:
            decoded = decode_image(path, 32, FUZZ_MAX_PIXELS)
        except DecodeError:
            return
    assert decoded.image.mode == "RGB" and decoded.width > 0 and decoded.height > 0


@st.composite
def mutated_images(draw):
    """A real file of one format, then byte flips, overwrites, truncation or insertion."""
    suffix = draw(st.sampled_from(sorted(REAL_IMAGES)))
    data = bytearray(REAL_IMAGES[suffix])
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "header"]))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[position:position + len(chunk)] = chunk
        elif kind == "truncate":
            del data[max(position, 1):]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first 64 bytes hold sizes, offsets and counts: the dangerous fields
            data[draw(st.integers(0, min(63, len(data) - 1)))] = draw(st.integers(0, 255))
        if not data:
            break
    return bytes(data), suffix


@FUZZ
@given(mutated_images())
def test_decode_of_mutated_real_images_raises_decode_error_or_succeeds(case):
    check_decode(*case)


@FUZZ
@given(st.sampled_from(sorted(REAL_IMAGES)), st.binary(max_size=2048))
def test_decode_of_random_bytes_behind_a_real_magic(suffix, tail):
    check_decode(REAL_IMAGES[suffix][:16] + tail, suffix)


# -- text corpora ---------------------------------------------------------------------------
def check_corpus(data: bytes, suffix: str) -> None:
    """The property: documents that Arrow can store and the encoder can read, or CorpusError."""
    path = SCRATCH / f"corpus{suffix}"
    path.write_bytes(data)
    with time_limit(PER_INPUT_SECONDS):
        try:
            documents = read_text_documents(str(path))
        except CorpusError:
            return
    for document in documents:
        assert isinstance(document.text, str) and document.text.strip()
        assert len(document.text) <= MAX_DOCUMENT_CHARS
        document.text.encode("utf-8")  # strict: a lone surrogate would fail the commit later
    pa.array([d.text for d in documents], pa.string())
    pa.array([d.key for d in documents], pa.string())


# Text with the lone surrogate halves a JSON \\uXXXX escape can produce (st.text never
# draws them, so characters are drawn one by one and joined).
any_text = st.lists(st.characters() | st.sampled_from(["\ud800", "\udbff", "\udc00"]),
                    max_size=20).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["text", "other", ""]) | st.text(max_size=5), children,
                      max_size=4),
    max_leaves=12)


@st.composite
def jsonl_files(draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["row", "value", "garbage", "nested"]))
        if kind == "row":
            row = {"text": draw(any_text | json_values)}
            lines.append(json.dumps(row, ensure_ascii=draw(st.booleans())))
        elif kind == "value":
            lines.append(json.dumps(draw(json_values)))
        elif kind == "nested":  # deep nesting trips json's recursion limit
            depth = draw(st.integers(1, 200_000))
            lines.append("[" * depth + "]" * draw(st.integers(0, depth)))
        else:
            lines.append(draw(st.text(max_size=40)))
    separator = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return separator.join(lines).encode("utf-8", "surrogatepass")


@st.composite
def csv_files(draw) -> bytes:
    header = draw(st.sampled_from(["text", "text,n", "n,text", "caption", '"text"', ""]))
    cells = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from('",\n\r\x00'),
                    max_size=30)
    rows = [",".join(draw(st.lists(cells, max_size=3))) for _ in range(draw(st.integers(0, 5)))]
    return "\n".join([header] + rows).encode("utf-8")


def parquet_file(values: list) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": values}), buffer)
    return buffer.getvalue()


@FUZZ
@given(jsonl_files())
def test_jsonl_corpora(data):
    check_corpus(data, ".jsonl")


@FUZZ
@given(csv_files())
def test_csv_corpora(data):
    check_corpus(data, ".csv")


@FUZZ
@given(st.sampled_from([".txt", ".md", ".jsonl", ".csv", ".parquet"]), st.binary(max_size=512))
def test_any_bytes_as_any_corpus(suffix, data):
    check_corpus(data, suffix)


@FUZZ
@given(st.lists(st.none() | st.text(), max_size=6)
       | st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)
       | st.lists(st.binary(max_size=8), max_size=3))
def test_parquet_corpora_with_any_text_column(values):
    check_corpus(parquet_file(values), ".parquet")


# -- inputs that once found bugs ------------------------------------------------------------
def _seed_files() -> list[Path]:
    return sorted(p for p in SEEDS.iterdir() if p.is_file() and p.suffix != ".md")


@pytest.mark.parametrize("seed", _seed_files(), ids=lambda p: p.name)
def test_fuzz_seed_regressions(seed):
    suffix = seed.suffix.lower()
    assert suffix in IMAGE_EXTENSIONS | TEXT_EXTENSIONS, f"{seed.name}: no target for {suffix}"
    if suffix in IMAGE_EXTENSIONS:
        check_decode(seed.read_bytes(), suffix)
    else:
        check_corpus(seed.read_bytes(), suffix)


# -- coverage-guided: atheris (libFuzzer) ---------------------------------------------------
ATHERIS_HARNESS = '''
import os, sys, tempfile
import atheris

with atheris.instrument_imports():
    import PIL.Image

    PIL.Image.init()  # every format plugin, imported inside the instrumented block
    from mmindex.data.images import DecodeError, decode_image
    from mmindex.data.scan import CorpusError, read_text_documents

TARGET = sys.argv.pop(1)  # "image" or a corpus suffix such as ".jsonl"
PATH = os.path.join(tempfile.mkdtemp(), "input" + (".img" if TARGET == "image" else TARGET))


def one_input(data):
    with open(PATH, "wb") as handle:
        handle.write(data)
    try:
        if TARGET == "image":
            assert decode_image(PATH, 32, 1 << 22).image.mode == "RGB"
        else:
            for document in read_text_documents(PATH):
                document.text.encode("utf-8")
    except (DecodeError, CorpusError):
        pass


atheris.Setup(sys.argv, one_input)
atheris.Fuzz()
'''


FUZZ_SECONDS = int(os.environ.get("MMINDEX_FUZZ_SECONDS", "0"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["image", ".jsonl", ".csv"])
def test_coverage_guided_fuzzing_with_atheris(target, tmp_path):
    """libFuzzer per target for MMINDEX_FUZZ_SECONDS (opt-in; see the skip below),
    from the real images and the kept seeds; a crash leaves its input in tmp_path/crash-*
    to add to tests/data/fuzz_seeds/."""
    if FUZZ_SECONDS <= 0:
        # Opt-in: on 2026-11-27 a CI run's image target ended with libFuzzer's "fuzz target
        # exited" (the process left mid-input, no artifact kept); not yet explained, so it
        # runs where someone is there to read it: MMINDEX_FUZZ_SECONDS=60 pytest -k atheris
        pytest.skip("coverage-guided fuzzing is opt-in: set MMINDEX_FUZZ_SECONDS")
    pytest.importorskip("atheris")
    import subprocess
    import sys

    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for name, data in REAL_IMAGES.items() if target == "image" else ():
        (seeds / f"real{name}").write_bytes(data)
    for seed in _seed_files():
        (seeds / seed.name).write_bytes(seed.read_bytes())
    (tmp_path / "harness.py").write_text(ATHERIS_HARNESS)
    run = subprocess.run(
        [sys.executable, str(tmp_path / "harness.py"), target, f"-max_total_time={FUZZ_SECONDS}",
         "-timeout=10", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/", str(seeds)],
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
