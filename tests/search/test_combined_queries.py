"""Combined queries: the query vector is the normalised sum of the terms' unit embeddings,
with their signs; one syntax for Index.search, the CLI and the API."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmindex import IngestConfig, ingest, open_index
from mmindex.cli import app
from mmindex.errors import UserInputError
from mmindex.search.query import parse_query


@pytest.mark.parametrize("text,base,plus,minus", [
    ("beach +sunset -people", "beach", ["sunset"], ["people"]),
    ('beach +"at night" -"big crowds" +dog', "beach", ["at night", "dog"], ["big crowds"]),
    ("+sunset -people", "", ["sunset"], ["people"]),
    ("a t-shirt for c++ fans", "a t-shirt for c++ fans", [], []),
    ("dog's toy", "dog's toy", [], []),
])
def test_parse_query(text, base, plus, minus):
    parsed = parse_query(text)
    assert (parsed.base, parsed.plus, parsed.minus) == (base, plus, minus)


def test_an_empty_term_is_refused_naming_the_query():
    with pytest.raises(UserInputError, match=r"empty \+term in the query 'beach \+\"\"'"):
        parse_query('beach +""')


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from mmindex.testing import TINY, photo

    folder = tmp_path_factory.mktemp("combined")
    for i in range(8):
        photo(60 + 10 * i, 50, 300 + i).save(folder / f"p{i}.jpg")
    ingest(IngestConfig(roots=(folder,), index_dir=folder / ".idx", model=TINY,
                        precision="fp32"))
    return open_index(folder / ".idx")


def unit(v):
    return v / np.linalg.norm(v)


def same(hits_a, hits_b):
    assert [h.id for h in hits_a] == [h.id for h in hits_b]
    assert [h.score for h in hits_a] == pytest.approx([h.score for h in hits_b], abs=1e-5)


def test_text_terms_are_the_normalised_signed_sum(index):
    expected = unit(index.embed_text("beach") + index.embed_text("sunset")
                    - index.embed_text("people"))
    combined = index.search("beach +sunset -people", k=8)
    same(combined, index.search(vector=expected, k=8))
    same(combined, index.search("beach", plus=["sunset"], minus=["people"], k=8))
    assert [h.id for h in combined] != [h.id for h in index.search("beach", k=8)]


def test_an_image_plus_a_text(index):
    image = Path(index.rows("images").column("path")[0].as_py())
    expected = unit(index.embed_image(image) + index.embed_text("at night"))
    same(index.search(image=image, plus=["at night"], k=8), index.search(vector=expected, k=8))
    same(index.search("+\"at night\"", image=image, k=8), index.search(vector=expected, k=8))
    # a Path among the terms is an image, a str a text
    same(index.search("at night", plus=[image], k=8), index.search(vector=expected, k=8))


def test_terms_that_cancel_out_and_minus_alone_are_refused(index):
    with pytest.raises(UserInputError, match="cancel"):
        index.search("cat +dog -cat -dog")
    with pytest.raises(UserInputError, match="-terms only take away"):
        index.search(image=None, vector=None, minus=["people"], query="-people")


def test_a_base_text_and_an_image_together_still_point_to_plus(index):
    image = Path(index.rows("images").column("path")[0].as_py())
    with pytest.raises(UserInputError, match="--plus"):
        index.search("a cat", image=image)


def test_cli_image_plus_text_and_image_path_terms(index):
    image = index.rows("images").column("path")[0].as_py()
    other = index.rows("images").column("path")[1].as_py()
    runner = CliRunner()

    def cli(*args):
        result = runner.invoke(app, ["search", *args, "--index", str(index.root), "--json",
                                     "-k", "8"])
        assert result.exit_code == 0, result.output
        return [h["id"] for h in json.loads(result.output)]

    expected = unit(index.embed_image(Path(image)) + index.embed_text("at night")
                    - index.embed_image(Path(other)))
    ids = [h.id for h in index.search(vector=expected, k=8)]
    assert cli("--image", image, "--plus", "at night", "--minus", other) == ids
    assert cli("at night", "--plus", image, "--minus", other) == ids
    assert cli("beach +sunset -people") == [h.id for h in index.search("beach +sunset -people",
                                                                       k=8)]


def test_the_api_speaks_the_same_syntax(index):
    pytest.importorskip("fastapi", reason="needs the serve extra")
    from fastapi.testclient import TestClient

    from mmindex.serve import create_app
    from mmindex.serve.answers import Answers

    client = TestClient(create_app(index.root, answers=Answers(find_module=lambda: None)))
    response = client.get("/api/search", params={"q": 'beach +"at night" -people', "k": 8})
    assert response.status_code == 200, response.text
    expected = index.search("beach", plus=["at night"], minus=["people"], k=8)
    assert [h["id"] for h in response.json()["hits"]] == [h.id for h in expected]
