import pytest

from mmindex.testing import TINY
from mmindex import IngestConfig, ingest, open_index
from mmindex.errors import UserInputError


@pytest.fixture
def index(photo_folder, tmp_path):
    ingest(IngestConfig(roots=(photo_folder,), index_dir=tmp_path / "idx", model=TINY,
                        precision="fp32"))
    return open_index(tmp_path / "idx")


def test_text_search_ranks_by_score(index):
    hits = index.search("a photo", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filtered_search_still_returns_k_when_k_rows_match(index):
    everything = index.search("a photo", k=6)
    hits = index.search("a photo", k=3, where="path LIKE '%/2024/%'")
    assert len(hits) == 3 and all("/2024/" in h.path for h in hits)
    assert [h.path for h in hits] == [h.path for h in everything if "/2024/" in h.path]
    assert len(index.search("a photo", k=10, where="width >= 140")) == 2


def test_min_score_drops_weak_hits(index):
    hits = index.search("a photo", k=6)
    cut = hits[2].score
    assert len(index.search("a photo", k=6, min_score=cut)) == 3


@pytest.mark.parametrize("where", [
    "no_such_column > 1", "1=1; DROP TABLE images", "path IN (SELECT * FROM read_csv('/etc/passwd'))",
])
def test_bad_or_hostile_predicates_are_refused(index, where):
    with pytest.raises(UserInputError, match="--where"):
        index.search("x", where=where)


def test_a_predicate_that_runs_too_long_is_stopped(index):
    import time

    endless = "id IN (SELECT count(*) FROM range(1000000000000) WHERE range % 7 = 3)"
    started = time.monotonic()
    with pytest.raises(UserInputError, match="longer than 0.3 s"):
        index.filter_ids("images", endless, timeout_s=0.3)
    assert time.monotonic() - started < 30  # the query alone would run for hours
    assert len(index.filter_ids("images", "width > 0", timeout_s=0.3)) == 6  # a fresh connection


def test_exactly_one_query_kind(index):
    with pytest.raises(UserInputError):
        index.search("x", vector=[0.0] * 64)
    with pytest.raises(UserInputError, match="dimensions"):
        index.search(vector=[1.0] * 3)


def test_bad_query_image_names_the_file(index, tmp_path):
    (tmp_path / "q.jpg").write_text("not an image")
    with pytest.raises(UserInputError, match="q.jpg"):
        index.search(image=tmp_path / "q.jpg")


def test_reader_keeps_its_generation_while_a_writer_commits(index, photo_folder):
    from mmindex.testing import photo

    before = index.rows("images").num_rows
    photo(30, 30, 77).save(photo_folder / "later.jpg")
    ingest(IngestConfig(roots=(photo_folder,), index_dir=index.root, model=TINY))
    assert index.rows("images").num_rows == before == index.vectors("images").count
    assert open_index(index.root).rows("images").num_rows == before + 1


def test_a_semicolon_inside_a_quoted_value_is_just_text(index):
    assert index.search("a photo", where="path LIKE '%;%'") == []
