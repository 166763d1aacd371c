"""The search page in a real browser: Debian's headless Chromium driven by playwright.

Starts uvicorn on 127.0.0.1 (a free port) in a thread, types a query, checks the result grid
against a direct index search, pages forward and back, and saves a screenshot
(``<pytest tmp>/serve.png``; set ``GCL_SCREENSHOT_TO=path`` to copy it elsewhere, e.g. for docs, and
``GCL_SCREENSHOT_MODEL=minilm`` to rank with MiniLM instead of the tiny random encoder).
Skipped when /usr/bin/chromium or playwright is missing (CI installs chromium best-effort).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
pytest.importorskip("faiss")
pytest.importorskip("uvicorn")

from gcl.encoders.query import encode_query_texts  # noqa: E402
from gcl.index.store import VectorIndex  # noqa: E402
from gcl.service import ServiceSettings, create_app  # noqa: E402
from service_helpers import build_tiny_index, free_port, make_documents, write_pngs  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGE_SIZE = 8


@pytest.fixture(scope="module")
def served(tmp_path_factory, one_torch_thread):
    """(base URL, model, index dir, documents, work dir) of a uvicorn server running in a thread."""
    from gcl.encoders.model import BiEncoder
    from tiny_models import make_tiny_sentence_transformer

    root = tmp_path_factory.mktemp("page")
    model_dir = make_tiny_sentence_transformer(root / "model")
    if os.environ.get("GCL_SCREENSHOT_MODEL"):  # e.g. minilm, for a screenshot with meaningful rankings
        model_dir = os.environ["GCL_SCREENSHOT_MODEL"]
    model = BiEncoder.load(model_dir)
    docs = make_documents(60)
    build_tiny_index(model, model_dir, root / "index", docs)
    with_image = docs[docs["image"].map(lambda p: isinstance(p, str))]
    write_pngs(root / "images", list(with_image["image"]), size=64, titles=list(with_image["title"]))
    app = create_app(ServiceSettings(index_dir=root / "index", image_root=root / "images", page_size=PAGE_SIZE),
                     model=model)
    url, stop = _serve(app)
    yield url, model, root / "index", docs, root
    stop()


def _serve(app):
    """Run ``app`` with uvicorn on a free port of 127.0.0.1 in a thread: (base URL, stop function)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context.new_page()
        finally:
            context.close()


def _cards(page):
    return page.eval_on_selector_all(".card", """cards => cards.map(c => ({
        id: c.dataset.docId,
        title: c.querySelector('.title').textContent,
        score: parseFloat(c.querySelector('.score').textContent),
        img: c.querySelector('img.thumb') ? c.querySelector('img.thumb').naturalWidth : null,
    }))""")


def test_search_page_grid_and_paging(served, page, tmp_path):
    base, model, index_dir, docs, _ = served
    row = next(i for i in range(0, len(docs), 2)  # an even row (it has an image) of a vivid colour
               if {"red", "blue", "green", "orange"} & set(docs["title"].iloc[i].lower().split()))
    query = docs["title"].iloc[row]
    want = VectorIndex.load(index_dir).search(encode_query_texts(model, [query]), 2 * PAGE_SIZE)[0]

    page.goto(base + "/")
    page.fill("#query", query)
    page.press("#query", "Enter")
    page.wait_for_function(f"document.querySelectorAll('.card').length === {PAGE_SIZE}")
    page.wait_for_function("[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
    first = _cards(page)
    assert [c["id"] for c in first] == [h.doc_id for h in want[:PAGE_SIZE]]
    assert [c["title"] for c in first] == [h.fields["title"] for h in want[:PAGE_SIZE]]
    assert [c["score"] for c in first] == pytest.approx([round(h.score, 4) for h in want[:PAGE_SIZE]], abs=1e-4)
    assert first[0]["id"] == docs.index[row]  # the document whose title was typed
    for card, hit in zip(first, want):  # thumbnails exactly where the document has an image, all decoded
        assert (card["img"] is not None) == ("image" in hit.fields)
        assert card["img"] in (None, 64)
    assert "Results 1–8" in page.text_content("#status") and page.is_disabled("#prev")
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("GCL_SCREENSHOT_TO"):
        shutil.copyfile(shot, os.environ["GCL_SCREENSHOT_TO"])

    page.click("#next")
    page.wait_for_function("document.querySelector('#page-label').textContent === 'Page 2'")
    page.wait_for_function(f"document.querySelector('.card').dataset.docId === {want[PAGE_SIZE].doc_id!r}")
    assert [c["id"] for c in _cards(page)] == [h.doc_id for h in want[PAGE_SIZE:2 * PAGE_SIZE]]
    assert "Results 9–16" in page.text_content("#status")
    page.click("#prev")
    page.wait_for_function("document.querySelector('#page-label').textContent === 'Page 1'")
    page.wait_for_function(f"document.querySelector('.card').dataset.docId === {want[0].doc_id!r}")
    assert [c["id"] for c in _cards(page)] == [h.doc_id for h in want[:PAGE_SIZE]]


def test_search_page_shows_errors_and_empty_results(served, page):
    base = served[0]
    page.goto(base + "/")
    page.fill("#query", "x" * 1001)  # over max_query_chars: the API's 422 is shown, not a blank page
    page.press("#query", "Enter")
    page.wait_for_selector("#status.error")
    assert "Error 422" in page.text_content("#status") and page.query_selector(".card") is None


def test_search_page_with_an_api_key(served, page):
    _, model, index_dir, docs, root = served
    keyed_dir = root / "index-keyed"
    shutil.copytree(index_dir, keyed_dir)
    app = create_app(ServiceSettings(index_dir=keyed_dir, image_root=root / "images", page_size=PAGE_SIZE,
                                     api_key="pa55"), model=model)
    url, stop = _serve(app)
    try:
        page.goto(url + "/")
        assert page.is_visible("#api-key")
        page.fill("#query", docs["title"].iloc[0])
        page.press("#query", "Enter")  # no key yet: the 401 is shown
        page.wait_for_selector("#status.error")
        assert "Error 401" in page.text_content("#status")
        page.fill("#api-key", "pa55")
        page.press("#query", "Enter")
        page.wait_for_function(f"document.querySelectorAll('.card').length === {PAGE_SIZE}")
        # thumbnails are fetched with the key (an <img> alone would get a 401)
        page.wait_for_function("[...document.querySelectorAll('img.thumb')].length > 0 && "
                               "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)")
        assert page.eval_on_selector(".card", "c => c.dataset.docId") == docs.index[0]
    finally:
        stop()
