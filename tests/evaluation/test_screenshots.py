"""Replies drawn in real headless Chromium: fixed pixels, colours, nothing fetched, nothing run;
the comparison by pixel ratio and SSIM."""

from __future__ import annotations

import http.server
import threading

import pytest

from afs_build.evaluation import images, render
from afs_build.evaluation.chromium import Browser

STYLE = {"font": "DejaVu Sans", "mono_font": "DejaVu Sans Mono", "font_size": 14, "width": 400}


@pytest.fixture(scope="module")
def browser():
    with Browser(400, 200) as b:
        yield b


def draw(browser, tmp_path, reply: str, kind: str, name: str = "page") -> bytes:
    page = tmp_path / f"{name}.html"
    page.write_text(render.page(reply, kind, **STYLE), encoding="utf-8")
    return browser.screenshot(page)


def test_the_same_reply_draws_the_same_pixels(browser, tmp_path):
    table = "| Register | Address |\n|---|---|\n| INIDISP | $2100 |"
    first, second = draw(browser, tmp_path, table, "markdown"), draw(browser, tmp_path, table, "markdown", "again")
    stats, diff = images.compare(first, second)
    assert stats == {"diff_ratio": 0.0, "ssim": 1.0, "same_size": True, "width": 400, "height": 200}
    assert images.load(first).shape == (200, 400, 3) and diff[:4] == b"\x89PNG"
    changed = draw(browser, tmp_path, table.replace("2100", "4200"), "markdown", "changed")
    stats, _ = images.compare(first, changed)
    assert 0 < stats["diff_ratio"] < 0.05 and stats["ssim"] < 1.0
    prose = draw(browser, tmp_path, "INIDISP is at $2100.", "markdown", "prose")
    assert images.compare(first, prose)[0]["ssim"] < images.compare(first, changed)[0]["ssim"]


def test_a_markdown_table_is_drawn_as_a_table(browser, tmp_path):
    image = images.load(draw(browser, tmp_path, "| A | B |\n|---|---|\n| 1 | 2 |", "markdown"))
    grey_rows = ((image == 0x99).all(axis=2).sum(axis=1) > 20).sum()  # the table's border lines
    assert grey_rows >= 2
    plain = images.load(draw(browser, tmp_path, "| A | B |\n|---|---|\n| 1 | 2 |", "code", "code"))
    assert ((plain == 0x99).all(axis=2).sum(axis=1) > 20).sum() == 0


def test_ansi_colours_are_drawn(browser, tmp_path):
    image = images.load(draw(browser, tmp_path, "\x1b[32;1mPASSED\x1b[0m and \x1b[31mFAILED\x1b[0m", "ansi"))
    red = ((image[:, :, 0] > 150) & (image[:, :, 1] < 60) & (image[:, :, 2] < 60)).sum()
    green = ((image[:, :, 1] > 150) & (image[:, :, 0] < 60) & (image[:, :, 2] < 60)).sum()
    assert red > 20 and green > 20
    assert "color:#00cd00" in render.ansi("\x1b[32mok\x1b[0m") and "\x1b" not in render.ansi("\x1b[2K\x1b[1;31mx")


class Counter(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_replys_html_runs_no_script_and_fetches_nothing(browser, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        hostile = (f"<p>static</p><img src='http://127.0.0.1:{port}/pixel.png'>"
                   f"<link rel='stylesheet' href='http://127.0.0.1:{port}/x.css'>"
                   "<script>document.body.innerHTML = '<h1>REPLACED BY A SCRIPT</h1>'</script>")
        shot = draw(browser, tmp_path, hostile, "html")
        clean = draw(browser, tmp_path, "<p>static</p>", "html", "clean")
        assert Counter.hits == 0
        # the script did not run: the page still shows only "static" (and the blocked image's icon)
        assert images.compare(shot, clean)[0]["diff_ratio"] < 0.01
    finally:
        server.shutdown()
        server.server_close()


def test_images_of_different_sizes_compare_on_one_canvas():
    import io

    from PIL import Image

    def png(w, h, colour):
        buffer = io.BytesIO()
        Image.new("RGB", (w, h), colour).save(buffer, format="PNG")
        return buffer.getvalue()

    stats, _ = images.compare(png(10, 10, "white"), png(10, 20, "black"))
    assert not stats["same_size"] and stats["height"] == 20 and stats["diff_ratio"] == 1.0
    assert images.compare(png(10, 10, "white"), png(10, 10, "white"))[0]["ssim"] == 1.0


def test_a_chromium_named_but_missing_is_a_clear_error(monkeypatch):
    from afs_build.errors import StageError

    monkeypatch.setenv("AFS_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(StageError, match="AFS_CHROMIUM names /nonexistent/chromium, which is not an executable"):
        Browser(100, 100)


def test_thresholds_are_per_question_and_the_first_run_records_the_baseline(browser, tmp_path):
    """compare_all on real drawings: a missing baseline is recorded; the same changed reply
    differs under the manifest's thresholds and matches under a question's looser ones."""
    from afs_build.manifest import Screenshots
    from afs_build.paths import ScreenshotFiles
    from afs_build.stages.screenshots import compare_all

    settings = Screenshots(baselines="b", width=400, height=200, font="DejaVu Sans", mono_font="DejaVu Sans Mono",
                           font_size=14, max_diff_ratio=0.001, min_ssim=0.999, require_match=False)
    strict = {"id": "strict", "render": "markdown", "max_diff_ratio": None, "min_ssim": None}
    loose = {"id": "loose", "render": "markdown", "max_diff_ratio": 0.5, "min_ssim": 0.5}
    questions = {q["id"]: q for q in (strict, loose)}
    files, baselines = ScreenshotFiles(tmp_path / "shots"), tmp_path / "baselines"
    table = "| Register | Address |\n|---|---|\n| INIDISP | $2100 |"
    rows = [{"question_id": qid, "reply": table} for qid in questions]
    first = compare_all(browser, files, rows, questions, baselines, settings)
    assert first["recorded"] == 2 and (baselines / "strict.png").read_bytes()[:4] == b"\x89PNG"
    changed = [{**r, "reply": table.replace("2100", "4200")} for r in rows]
    second = compare_all(browser, files, changed, questions, baselines, settings)
    assert second["questions"]["strict"]["status"] == "differs" and second["questions"]["loose"]["status"] == "matches"
    assert second["questions"]["strict"]["diff_ratio"] == second["questions"]["loose"]["diff_ratio"] > 0
    for kind in ("baseline", "actual", "diff"):
        assert files.image(kind, "strict").read_bytes()[:4] == b"\x89PNG"
    assert "diff/strict.png" in files.page.read_text()
