"""The web page in headless Chromium (Debian's package, driven by Playwright): search, click a
result to search by it, upload, keyboard use, phone width, offline, and the token prompt.

A real uvicorn server runs in a thread over a six-photo index of the tiny model."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it as root: "
                "apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="needs playwright: pip install -e '.[dev]'")

import uvicorn

from mmindex.testing import TINY, photo, photo_exif
from mmindex import IngestConfig, ingest
from mmindex.serve import create_app
from mmindex.serve.answers import Answers

# Chromium on this machine: no sandbox as root, and no background calls to Google's hosts
# (the closed network refuses them, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 15_000
pytestmark = pytest.mark.slow  # a browser start and a real server: ~20 s on two cores


class _Server:
    """uvicorn in a daemon thread on a free loopback port."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def album_index(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("browser")
    dated = {0: photo_exif("2023:03:04 05:06:00", "Google", "Pixel 7", gps=(48.8566, 2.3522)),
             1: photo_exif("2024:09:10 11:12:00", "Canon", "Canon EOS R5")}
    for i in range(6):
        photo(60 + 20 * i, 50, 100 + i).save(root / f"photo{i}.jpg", quality=90,
                                             **({"exif": dated[i]} if i in dated else {}))
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY))
    return root, root / ".idx"


@pytest.fixture(scope="module")
def base_url(album_index):
    with _Server(create_app(album_index[1], answers=Answers(find_module=lambda: None))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    outside = []
    page.on("request", lambda r: None if r.url.startswith((base_url, "blob:", "data:"))
            else outside.append(r.url))
    page.goto(base_url + "/")
    sync_api.expect(page.locator("#status")).to_contain_text("6 images")
    sync_api.expect(page.locator("#token-form")).to_be_hidden()  # no token on this server
    yield page
    context.close()
    assert outside == [], f"the page fetched from elsewhere: {outside}"  # works offline


def _search(page, text: str, k: int = 4) -> None:
    page.fill("#k", str(k))
    page.fill("#q", text)
    page.press("#q", "Enter")
    sync_api.expect(page.locator("#message")).to_contain_text(f"for “{text}”")


def _thumbnails_loaded(page) -> bool:
    return page.eval_on_selector_all(
        "#results img", "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)")


def test_search_then_click_a_result_to_search_by_it(page):
    _search(page, "a photo", k=4)
    hits = page.locator("#results .hit")
    sync_api.expect(hits).to_have_count(4)
    scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert _thumbnails_loaded(page)

    third = hits.nth(2)
    clicked_id, clicked_name = third.get_attribute("data-id"), third.locator(".name").inner_text()
    third.click()
    sync_api.expect(page.locator("#message")).to_contain_text(f"images like {clicked_name}")
    sync_api.expect(hits.first).to_have_attribute("data-id", clicked_id)
    sync_api.expect(hits).to_have_count(4)


def test_results_show_when_and_where_and_sort_newest_first(page):
    page.select_option("#sort", "-taken")
    _search(page, "a photo", k=6)
    captions = page.locator("#results .hit .taken")
    sync_api.expect(captions).to_have_count(2)  # the two photos whose EXIF says
    sync_api.expect(captions.nth(0)).to_have_text("2024-09-10 11:12 · Canon EOS R5")
    sync_api.expect(captions.nth(1)).to_have_text("2023-03-04 05:06 · Google Pixel 7 · 48.86, 2.35")
    first = page.locator("#results .hit").first
    sync_api.expect(first).to_contain_text("photo1.jpg")  # newest first, whatever its score


def test_a_linked_search_runs_on_load_and_each_search_updates_the_url(browser, base_url):
    from urllib.parse import parse_qs, urlsplit

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base_url + "/?q=a+photo&k=3&sort=-taken&filter=width:ge:80&target=images")
    sync_api.expect(page.locator("#message")).to_contain_text("for “a photo”")
    sync_api.expect(page.locator("#results .hit")).to_have_count(3)  # width 80..160: five
    assert page.input_value("#q") == "a photo" and page.input_value("#k") == "3"
    assert page.input_value("#sort") == "-taken"
    assert page.input_value("#filters") == "width:ge:80"
    sync_api.expect(page.locator("#results .hit").first).to_contain_text("photo1.jpg")

    _search(page, "a picture", k=5)  # a search from the form becomes the address
    sync_api.expect(page.locator("#results .hit")).to_have_count(5)
    state = parse_qs(urlsplit(page.url).query)
    assert state == {"q": ["a picture"], "k": ["5"], "target": ["images"],
                     "sort": ["-taken"], "filter": ["width:ge:80"]}

    clicked = page.locator("#results .hit").nth(1)
    clicked_id = clicked.get_attribute("data-id")
    clicked.click()  # a search by a result is a link too
    sync_api.expect(page).to_have_url(re.compile(rf"[?&]like={clicked_id}(&|$)"))
    page.go_back()  # and Back runs the search before it again
    sync_api.expect(page.locator("#message")).to_contain_text("for “a picture”")
    assert page.input_value("#q") == "a picture"

    linked = page.url  # what a bookmark or a shared link holds
    other = context.new_page()
    other.goto(linked)
    sync_api.expect(other.locator("#results .hit")).to_have_count(5)
    context.close()


def test_keyboard_only(page):
    assert page.evaluate("document.activeElement.id") == "q"  # autofocus
    page.keyboard.type("a photo")
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#results .hit")).to_have_count(6)  # k=12, six images
    first = page.locator("#results .hit").first
    first.focus()
    name = first.locator(".name").inner_text()
    page.keyboard.press("Enter")
    sync_api.expect(page.locator("#message")).to_contain_text(f"images like {name}")
    # Tab reaches every control of the search form in order.
    page.focus("#q")
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert order == ["target", "k", "sort", "BUTTON", "upload-button", "SUMMARY"]


def test_upload_an_image_to_search(page, album_index):
    photo = album_index[0] / "photo3.jpg"
    with page.expect_file_chooser() as chooser:
        page.click("#upload-button")
    chooser.value.set_files(str(photo))
    sync_api.expect(page.locator("#message")).to_contain_text("images like photo3.jpg")
    sync_api.expect(page.locator("#results .hit .name").first).to_have_text("photo3.jpg")


def test_drop_an_image_to_search(page):
    _search(page, "a photo", k=6)
    target = page.locator("#results .hit").nth(4)
    target_id, name = target.get_attribute("data-id"), target.locator(".name").inner_text()
    dropped = page.evaluate_handle(
        """async (url) => {
             const blob = await (await fetch(url)).blob();
             const transfer = new DataTransfer();
             transfer.items.add(new File([blob], "dropped.jpg", {type: blob.type}));
             return transfer;
           }""", f"/api/images/{target_id}")
    page.dispatch_event("#results", "dragover", {"dataTransfer": dropped})
    sync_api.expect(page.locator("#drop-overlay")).to_be_visible()
    page.dispatch_event("#results", "drop", {"dataTransfer": dropped})
    sync_api.expect(page.locator("#drop-overlay")).to_be_hidden()
    sync_api.expect(page.locator("#message")).to_contain_text("images like dropped.jpg")
    sync_api.expect(page.locator("#results .hit .name").first).to_have_text(name)


def test_errors_show_in_the_page(page):
    page.locator("summary").click()
    page.fill("#filters", "width:gt:wide")
    _search_error = page.locator("#message.error")
    page.fill("#q", "a photo")
    page.press("#q", "Enter")
    sync_api.expect(_search_error).to_contain_text("not a number")
    # a server that cannot answer says why beside the Ask box, before anyone clicks it
    sync_api.expect(page.locator("#ask-note")).to_contain_text("mmindex[ask]")
    sync_api.expect(page.locator("#question")).to_be_disabled()
    sync_api.expect(page.locator("#ask-submit")).to_be_disabled()


def test_phone_width_has_no_horizontal_scroll(browser, base_url):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base_url + "/")
    _search(page, "a photo", k=6)
    sync_api.expect(page.locator("#results .hit")).to_have_count(6)
    page.locator("summary").click()  # the filters panel open too
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths
    boxes = page.eval_on_selector_all(
        "#results .hit, #search-form > *, #ask-form > *",
        "els => els.map(e => e.getBoundingClientRect().right)")
    assert max(boxes) <= 360, boxes
    context.close()


def test_token_prompt_then_search_with_thumbnails(browser, album_index):
    with _Server(create_app(album_index[1], token="let-me-in")) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        sync_api.expect(page.locator("#token-form")).to_be_visible()
        page.fill("#token", "let-me-in")
        page.press("#token", "Enter")
        sync_api.expect(page.locator("#status")).to_contain_text("6 images")
        _search(page, "a photo", k=3)
        sync_api.expect(page.locator("#results .hit")).to_have_count(3)
        page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                               ".every(i => i.src.startsWith('blob:') && i.naturalWidth > 0)")
        context.close()


class _CitingGenerate:
    """Stands in for mmindex.ask.generator: cites the top hits, answers with their names."""

    @staticmethod
    def resolve_generator(index, generator=None):
        return "citing"

    @staticmethod
    def load_answerer(index, generator=None, device="cpu"):
        return None

    @staticmethod
    def AskConfig(k, where, joint=False, tiles=0):  # stands in for a dataclass
        return SimpleNamespace(k=k, where=where, joint=joint, tiles=tiles)

    class Generator:
        def __init__(self, index, vlm):
            self.index = index

        def ask(self, question, config, on_text=None):
            _CitingGenerate.configs.append(config)
            hits = self.index.search(question, k=config.k)
            names = ", ".join(Path(h.path).name for h in hits)
            on_text("I see ")  # the page asks for a stream
            assert _CitingGenerate.go_on.wait(TIMEOUT_MS / 1000), "the test never let it finish"
            on_text(names + ".")
            answer = {"text": f"I see {names}.",
                      "citations": [{"tag": i, "id": h.id, "path": h.path, "score": h.score}
                                    for i, h in enumerate(hits, 1)]}
            return SimpleNamespace(to_dict=lambda: answer)

    go_on = threading.Event()  # set by the test once it saw the first streamed piece
    configs: list = []  # each question's AskConfig


def test_ask_box_shows_the_answer_and_its_cited_thumbnails(browser, album_index):
    app = create_app(album_index[1], answers=Answers(find_module=lambda: _CitingGenerate))
    with _Server(app) as url:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        page.fill("#question", "what is in the photos?")
        page.press("#question", "Enter")
        # The first piece shows while the answer is still being generated
        sync_api.expect(page.locator("#answer")).to_have_text("I see")
        sync_api.expect(page.locator("#answer")).to_have_attribute("aria-busy", "true")
        sync_api.expect(page.locator("#citations .hit")).to_have_count(0)
        _CitingGenerate.go_on.set()
        sync_api.expect(page.locator("#answer")).to_contain_text("I see photo")
        sync_api.expect(page.locator("#answer")).to_have_attribute("aria-busy", "false")
        sync_api.expect(page.locator("#citations .hit")).to_have_count(3)
        page.wait_for_function("() => [...document.querySelectorAll('#citations img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        assert _CitingGenerate.configs[-1].joint is False  # each image alone by default
        page.check("#joint")
        page.press("#question", "Enter")
        page.wait_for_function("() => document.querySelector('#answer')"
                               ".getAttribute('aria-busy') === 'false'")
        assert len(_CitingGenerate.configs) == 2 and _CitingGenerate.configs[-1].joint is True
        page.close()


def test_the_page_asks_a_pretrained_model(browser, album_index, tmp_path):
    """The real answering path with a tiny LLaVA loaded by folder: the page streams the answer
    and shows one cited thumbnail per retrieved image."""
    from mmindex.testing import write_tiny_llava

    answers = Answers(generator=str(write_tiny_llava(tmp_path / "llava")))
    with _Server(create_app(album_index[1], answers=answers)) as url:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/")
        sync_api.expect(page.locator("#ask-note")).to_be_hidden()
        page.fill("#question", "what is in the photo?")
        page.press("#question", "Enter")
        page.wait_for_function("() => document.querySelector('#answer')"
                               ".getAttribute('aria-busy') === 'false'")
        sync_api.expect(page.locator("#answer")).to_contain_text("[3] ")
        sync_api.expect(page.locator("#answer.error")).to_have_count(0)
        sync_api.expect(page.locator("#citations .hit")).to_have_count(3)
        page.close()


def test_duplicates_section_lists_the_groups_of_the_api_with_thumbnails(page, base_url):
    # the tiny model crowds its embeddings, so at 0.9 its distinct photos group together
    report = page.request.get(f"{base_url}/api/duplicates?threshold=0.9&limit=100").json()
    assert report["groups"], "the test needs at least one group to show"
    page.fill("#dup-threshold", "0.9")
    page.click("#duplicates-form button")
    sync_api.expect(page.locator("#dup-message")).to_contain_text(
        f"{report['total_groups']} groups among 6 images")
    groups = page.locator("#dup-groups .dup-group")
    sync_api.expect(groups).to_have_count(len(report["groups"]))
    first = report["groups"][0]
    sync_api.expect(groups.first.locator("h3")).to_contain_text(
        f"{first['kind']}: {len(first['files'])} files")
    names = groups.first.locator(".name").all_inner_texts()
    assert names == [f["path"].rsplit("/", 1)[-1] for f in first["files"]]
    sizes = groups.first.locator(".size").all_inner_texts()
    assert sizes[0].startswith(f"{first['files'][0]['size']} bytes")
    page.wait_for_function("() => [...document.querySelectorAll('#dup-groups img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page.fill("#dup-threshold", "1.5")  # past the input's max: the server's 400 shows
    page.evaluate("() => document.getElementById('duplicates-form').noValidate = true")
    page.click("#duplicates-form button")
    sync_api.expect(page.locator("#dup-message")).to_contain_text("threshold")


def test_a_pdf_page_shows_its_own_thumbnail_with_the_document_and_page(browser, tmp_path):
    pytest.importorskip("fpdf")
    from mmindex.testing import write_pdf

    (tmp_path / "docs").mkdir()
    write_pdf(tmp_path / "docs" / "report.pdf", ["Invoice 1041", "Delivery note", "Terms"])
    ingest(IngestConfig(roots=(tmp_path / "docs",), index_dir=tmp_path / "idx", model=TINY))
    with _Server(create_app(tmp_path / "idx", answers=Answers(find_module=lambda: None))) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url + "/?q=a+page&k=3&filter=page:eq:2&target=images")
        hits = page.locator("#results .hit")
        sync_api.expect(hits).to_have_count(1)
        sync_api.expect(hits.first.locator(".name")).to_have_text("report.pdf p. 2")
        page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        width, height = page.eval_on_selector(
            "#results img", "i => [i.naturalWidth, i.naturalHeight]")
        assert width < height  # the A4 page itself, rendered by the thumbnail endpoint
        context.close()


def test_where_draws_the_heatmap_over_a_result_when_the_index_has_tiles(browser, page,
                                                                        tmp_path_factory):
    from mmindex.data.tiles import TileSpec

    _search(page, "a photo", k=2)  # the album has no tiles: nothing to show where
    sync_api.expect(page.locator("#results .hit")).to_have_count(2)
    sync_api.expect(page.locator("#results .where")).to_have_count(0)
    root = tmp_path_factory.mktemp("browser-tiles")
    for i in range(2):
        photo(320, 200, 40 + i).save(root / f"wide{i}.png")
    ingest(IngestConfig(roots=(root,), index_dir=root / ".idx", model=TINY, tiles=TileSpec(6)))
    with _Server(create_app(root / ".idx", answers=Answers(find_module=lambda: None))) as url:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        tiled = context.new_page()
        tiled.set_default_timeout(TIMEOUT_MS)
        tiled.goto(url + "/")
        sync_api.expect(tiled.locator("#status")).to_contain_text("2 images")
        _search(tiled, "a photo", k=2)
        where = tiled.locator("#results .where").first
        img = tiled.locator("#results .hit img").first
        where.click()
        sync_api.expect(where).to_have_attribute("aria-pressed", "true")
        heat = re.compile(r"/api/heatmap\.png\?id=\d+&q=a\+photo$")
        sync_api.expect(img).to_have_attribute("src", heat)
        tiled.wait_for_function("() => { const i = document.querySelector('#results .hit img');"
                                " return i.complete && i.naturalWidth === 320; }")
        where.click()
        sync_api.expect(img).to_have_attribute("src", re.compile(r"/api/images/\d+/thumb$"))
        context.close()
