import numpy as np
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


# -- --where is one expression, bounded in time, memory and threads (issue 20, D3 and D5) ---
@pytest.mark.parametrize("where", [
    "1=1) UNION ALL SELECT 'a' --",
    "1=1) UNION SELECT 999999 --",
    "1=1) OR (1=1",
    "1=1) UNION ALL SELECT current_setting('temp_directory')::VARCHAR --",
    "1=1 UNION SELECT 999999",
    "1=1 ORDER BY id LIMIT 1",
    "1=1 GROUP BY id",
    "id = $1",
    "id = ?",
])
def test_a_predicate_cannot_reach_past_its_where_clause(index, where):
    with pytest.raises(UserInputError, match="--where"):
        index.filter_ids("images", where)


def test_an_escaping_predicate_is_one_line_from_the_cli_not_a_traceback(index):
    from typer.testing import CliRunner

    from mmindex.cli import app

    result = CliRunner().invoke(app, ["search", "x", "--index", str(index.root),
                                      "--where", "1=1) UNION ALL SELECT 'a' --"])
    assert result.exit_code == 2 and "--where" in result.output
    assert "Traceback" not in result.output and "invalid literal" not in result.output


def test_duckdb_runs_a_predicate_on_one_thread_without_spilling(index):
    bounded = ("current_setting('threads') = 1 "
               "AND current_setting('max_temp_directory_size') = '0 bytes'")
    assert len(index.filter_ids("images", bounded)) == 6


def _where_threads_running() -> bool:
    import threading

    return any(t.name == "mmindex-where" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("hostile", [
    # one huge call that DuckDB does not interrupt midway (ran past 120 s in the issue)
    "(SELECT bool_and(x) FROM (SELECT repeat('a', 1000000000) = '' AS x))",
    # unbounded recursion: once said "stopped" but kept running
    "id IN (WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r)",
])
def test_the_time_limit_holds_whatever_duckdb_is_doing(index, hostile):
    import time

    quick = open_index(index.root)
    quick.where_timeout_s = 1.0
    started = time.monotonic()
    with pytest.raises(UserInputError, match="longer than 1 s"):
        quick.search(vector=[1.0] * 64, where=hostile)
    assert time.monotonic() - started < 2.5  # the limit, the grace after the interrupt, slack
    deadline = time.monotonic() + 30
    while _where_threads_running() and time.monotonic() < deadline:
        time.sleep(0.1)  # the interrupted query lets go of its thread soon after
    assert not _where_threads_running()


def test_arbitrary_text_as_where_is_a_result_or_a_user_input_error(index):
    import time

    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    quick = open_index(index.root)
    quick.where_timeout_s = 1.0
    tokens = st.sampled_from(["1=1", ")", "(", "'", "--", ";", "UNION", "SELECT", "ALL", "OR",
                              "id", "width", "> 3", "path LIKE '%a%'", "::VARCHAR", "*", "FROM",
                              "range(10)", "$1", "?", "/*", "*/", "ORDER BY", "LIMIT 1", ","])
    predicates = st.one_of(st.text(max_size=40), st.lists(tokens, max_size=10).map(" ".join))

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(predicates)
    @example("1=1) UNION ALL SELECT 'a' --")  # the escapes, tried every run
    @example("1=1) UNION ALL SELECT current_setting('temp_directory')::VARCHAR --")
    def check(where):
        started = time.monotonic()
        try:
            ids = quick.filter_ids("images", where)
            assert ids.dtype == np.int64 and set(ids) <= set(range(6))
        except UserInputError:
            pass
        assert time.monotonic() - started < 2.5

    check()


def test_reopened_follows_commits_and_keeps_the_loaded_model(tmp_path, monkeypatch):
    """What a long-lived server needs: the newest generation, without reloading the model."""
    from mmindex import IngestConfig, ingest, open_index
    from mmindex.testing import photo

    folder = tmp_path / "photos"
    folder.mkdir()
    photo(60, 40, 1).save(folder / "a.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY))
    first = open_index(tmp_path / "idx")
    first.search(image=folder / "a.jpg")  # loads the model
    assert first.reopened() is first  # nothing committed since
    photo(70, 40, 2).save(folder / "b.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=tmp_path / "idx", model=TINY))
    second = first.reopened()
    assert second.manifest.generation == first.manifest.generation + 1
    assert second.rows("images").num_rows == 2 and first.rows("images").num_rows == 1
    from mmindex.models import registry

    monkeypatch.setattr(registry, "load_encoder", lambda *a: pytest.fail("loaded again"))
    assert len(second.search(image=folder / "b.jpg", k=5)) == 2  # on first's model
