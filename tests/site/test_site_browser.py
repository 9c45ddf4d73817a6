"""The built site in a real browser: headless Chromium over the DevTools protocol, from a
loopback HTTP server. Every page loads without console errors or failed requests and asks
nothing of the outside world; every chart draws its points; links resolve; a hostile reply is
shown, never run; the question filter works; charts draw under instant navigation and without
it. Screenshots of the home page and a specialist page are kept in the test's folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from afs_build.manifest import load
from afs_build.site.build import build_site
from site_browser import CHARTS_JS, Browser, free_port, http_server
from site_fixtures import MANIFEST, write_build

PAGES = {"index.html", "dashboard.html", "costs.html", "lineage.html", "reference.html",
         "specialists/alpha.html", "specialists/beta.html", "specialists/omega.html"}
# Points per chart, counted from the fake build by hand (site_fixtures.py).
EXPECTED = {
    "dashboard.html": {"chart-family-categories": 12,  # 3 categories x (alpha, beta, omega, base)
                       "chart-family-radar": 12,  # 4 models (at most 5) x 3 categories
                       "chart-family-speed": 8,  # 3 served models + 3 + 2 quantized files
                       "chart-family-quants": 6,  # 3 types x 2 trained specialists
                       "chart-family-history": 3,  # alpha's 2 versions + beta's 1
                       "chart-family-versus": 4,  # 2 compared specialists x (own, general)
                       "chart-beta-retrieval": 4,  # 2 categories x (with, without)
                       "chart-index-docs-quality": 12},  # 3 search modes x (recall@1, @5, @10, MRR)
    "specialists/beta.html": {"chart-beta-retrieval": 4, "chart-index-docs-quality": 12},
    "specialists/alpha.html": {"chart-alpha-loss": 15,  # 12 steps + 3 evaluations
                               "chart-alpha-speed": 12, "chart-alpha-quality": 10,
                               "chart-alpha-shares": 6,  # 2 groups x (asked, samples, tokens)
                               "chart-alpha-quant-size": 3, "chart-alpha-quant-answers": 6,
                               "chart-alpha-categories": 4},  # 2 categories x (alpha, base)
    "specialists/omega.html": {"chart-omega-quant-size": 2, "chart-omega-categories": 1},
}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium"))
    yield b
    b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The fake build's site, served at the address it was built for (site.url), where
    Material's instant navigation works."""
    port = free_port()
    data = json.loads(json.dumps(MANIFEST))
    data["site"]["url"] = f"http://127.0.0.1:{port}/"
    folder = build_site(load(write_build(tmp_path_factory.mktemp("family"), data)))
    with http_server(folder, port) as base:
        yield base


def clean(report: dict, base: str) -> None:
    """No failed request, no HTTP error, no console error, nothing fetched from elsewhere."""
    assert report["failed"] == [] and report["http_errors"] == [] and report["errors"] == [], report
    outside = [u for u in report["requests"] if not u.startswith(base) and not u.startswith("data:")]
    assert outside == []


def charts_ok(b: Browser) -> dict:
    found = b.js(CHARTS_JS)
    for chart in found:
        assert chart["drawn"], chart
        assert chart["points"] == chart["expected"] > 0, chart
        assert chart["painted"] > 0 and chart["width"] > 300, chart  # drawn on its canvas
    return {c["id"]: c["points"] for c in found}


def test_every_page_loads_cleanly_and_its_links_and_charts_work(browser, served, tmp_path):
    queue, seen, ids, links = ["index.html"], set(), {}, []
    while queue:
        page = queue.pop(0)
        if page in seen:
            continue
        seen.add(page)
        clean(browser.goto(served + page), served)
        drawn = charts_ok(browser)
        for chart, points in EXPECTED.get(page, {}).items():
            assert drawn.get(chart) == points, (page, chart, drawn)
        ids[page] = set(browser.js("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        for href in browser.js("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
            url, fragment = urldefrag(href)
            if not url.startswith(served):
                continue
            target = urlparse(url).path.lstrip("/") or "index.html"
            links.append((page, target, fragment))
            if target.endswith(".html"):
                queue.append(target)
    assert PAGES <= seen
    for page, target, fragment in links:
        if target.endswith(".html"):
            assert target in ids, (page, target)
            assert not fragment or fragment in ids[target], f"{page} links to {target}#{fragment}"
        else:  # a file: an image, a report, the search index
            status = browser.js(f"fetch({json.dumps(served + target)}).then(r => r.status)")
            assert status == 200, (page, target)


def test_the_hostile_reply_is_shown_and_never_runs(browser, served):
    clean(browser.goto(served + "specialists/alpha.html"), served)
    assert browser.js("typeof window.__afsPwned") == "undefined"
    reply = browser.js("document.querySelector('#q-s1 .afs-reply').textContent")
    assert "<script>window.__afsPwned = 1</script>" in reply
    heading = browser.js("document.querySelector('h1').textContent")
    assert "<script>" in heading  # the role, as text


def test_questions_are_searchable_and_filter_by_failed(browser, served):
    browser.goto(served + "specialists/alpha.html")
    count = "document.querySelector('[data-afs-count]').textContent"
    visible = "Array.from(document.querySelectorAll('tr[data-afs-row]')).filter(r => !r.hidden).map(r => r.id)"
    assert browser.js(count) == "5 of 5"
    browser.js("(() => { const s = document.querySelector('[data-afs-search]'); s.value = 'DMA'; "
               "s.dispatchEvent(new Event('input')); })()")
    assert browser.js(visible) == ["q-s1"] and browser.js(count) == "1 of 5"
    browser.js("(() => { const s = document.querySelector('[data-afs-search]'); s.value = ''; "
               "s.dispatchEvent(new Event('input')); const f = document.querySelector('[data-afs-failed]'); "
               "f.checked = true; f.dispatchEvent(new Event('change')); })()")
    failed = browser.js("Array.from(document.querySelectorAll('tr[data-failed=\"true\"]')).map(r => r.id)")
    assert failed and browser.js(visible) == failed
    assert browser.js(count) == f"{len(failed)} of 5"


def all_drawn(b: Browser, expected: dict) -> bool:
    found = b.js(CHARTS_JS)
    return {c["id"] for c in found} == set(expected) and all(c["drawn"] for c in found)


def navigate_by_click(b: Browser, href: str) -> None:
    b.js(f"document.querySelector('a[href$={json.dumps(href)}]').click()")
    b.wait_for(lambda: b.js("location.pathname").endswith(href.split("/")[-1]) and
               b.js("document.readyState") == "complete", what=f"navigation to {href}")
    b.settle(len(b.events) - 1 if b.events else 0)


def test_charts_draw_under_instant_navigation(browser, served):
    clean(browser.goto(served + "index.html"), served)
    browser.js("window.__samePage = 1")
    start = len(browser.events)
    navigate_by_click(browser, "specialists/alpha.html")
    browser.wait_for(lambda: all_drawn(browser, EXPECTED["specialists/alpha.html"]), what="the specialist's charts")
    assert browser.js("window.__samePage") == 1  # the page was swapped in place, not reloaded
    drawn = charts_ok(browser)
    assert drawn == EXPECTED["specialists/alpha.html"]
    navigate_by_click(browser, "dashboard.html")
    browser.wait_for(lambda: all_drawn(browser, EXPECTED["dashboard.html"]), what="the dashboard's charts")
    assert charts_ok(browser) == EXPECTED["dashboard.html"]
    # the specialist's charts went with its page: only this page's charts are alive
    assert browser.js("Object.keys(Chart.instances).length") == len(EXPECTED["dashboard.html"])
    clean(browser.report(start), served)


def test_charts_draw_without_instant_navigation(tmp_path):
    data = json.loads(json.dumps(MANIFEST))
    data["site"]["instant_navigation"] = False
    manifest = load(write_build(tmp_path / "family", data))
    folder = build_site(manifest)
    b = Browser(tmp_path / "chromium")
    try:
        with http_server(folder) as base:
            clean(b.goto(base + "index.html"), base)
            b.js("window.__samePage = 1")
            navigate_by_click(b, "dashboard.html")
            b.wait_for(lambda: all_drawn(b, EXPECTED["dashboard.html"]), what="charts")
            assert b.js("typeof window.__samePage") == "undefined"  # a real page load
            assert charts_ok(b) == EXPECTED["dashboard.html"]
    finally:
        b.close()


def test_screenshots_of_the_home_page_and_a_specialist_page(browser, served, tmp_path):
    import struct

    for page in ("index.html", "specialists/alpha.html"):
        browser.goto(served + page)
        path = browser.screenshot(tmp_path / "screenshots" / (page.replace("/", "-") + ".png"))
        data = path.read_bytes()
        width, height = struct.unpack(">II", data[16:24])  # the PNG's IHDR
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and width == 1280 and height >= 900, page
        assert len(data) > 40_000, page  # text, tables and charts; a blank page compresses to little
    kept = os.environ.get("AFS_TEST_ARTIFACTS")  # CI keeps them: set it to a folder it uploads
    if kept:
        shutil.copytree(tmp_path / "screenshots", Path(kept) / "site-screenshots", dirs_exist_ok=True)
    print(f"screenshots kept in {kept or tmp_path / 'screenshots'}")
