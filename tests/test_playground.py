"""The playground page and the Origin rules in a real browser (headless Chromium).

Playwright drives the system's Chromium (`apt-get install chromium`; its
own browser download is not used) against the `/web` and `/webtok`
applications of `web_serve` (tests/conftest.py). Skipped where Chromium or
playwright is missing.
"""

import os
import shutil

import numpy as np
import pytest

import streamgen as sg
from helpers import assert_outputs_equal

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.browser]

pytest.importorskip("ray.serve")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

from conftest import WEB_TOKEN  # noqa: E402

TIMEOUT_MS = 60_000
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


class Watched:
    """A page, with every console error, failed request and URL it asked for."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1180, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console_errors, self.failed, self.urls = [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(r.url))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(
            f"{r.status} {r.url}"))
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.page.on("websocket", lambda ws: self.urls.append(ws.url))

    def wait(self, condition):
        self.page.wait_for_function(condition, timeout=TIMEOUT_MS)

    def idle(self):
        """Every step sent so far has its reply."""
        self.wait("() => playground.busy === 0 && playground.steps.every("
                  "s => s.out !== undefined || s.error !== undefined)")

    def close(self):
        self.context.close()


def test_playground_page_equals_a_local_stream(browser, web_serve, cli_model, tmp_path):
    w = Watched(browser)
    page = w.page
    page.goto(web_serve["web"] + "/")  # also without the trailing slash below
    w.wait("() => playground.connected && playground.settings.stop !== null")
    assert page.locator("#model").inner_text().startswith("tiny.tflite: 3 in, 2 out")
    # Stop controls: another threshold, a cap of 6 (re-opens the stream).
    page.fill("#threshold0", "0.6")
    page.fill("#cap", "6")
    page.click("#apply")
    w.wait("() => playground.settings.max_steps === 6")
    # The pointer: clicks, then a drag (throttled: a step every 60 ms at most).
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()

    def at(u, v):
        box = pad.bounding_box()
        return box["x"] + u * box["width"], box["y"] + v * box["height"]

    for u, v in [(0.8, 0.2), (0.3, 0.7), (0.5, 0.5)]:
        page.mouse.click(*at(u, v))
        w.idle()
    page.mouse.move(*at(0.1, 0.1))
    page.mouse.down()
    page.mouse.move(*at(0.9, 0.6), steps=25)
    page.mouse.up()
    w.idle()
    # Typed numbers, one step per Enter; save; two more steps; restore; one step.
    page.fill("#typed", "0.5 0 0.1")
    page.press("#typed", "Enter")
    w.idle()
    page.click("#save")
    w.wait("() => playground.saved !== null")
    saved_at = page.evaluate("playground.steps.length")
    page.mouse.click(*at(0.95, 0.05))
    w.idle()
    page.fill("#typed", "[1, 1, -0.5]")
    page.press("#typed", "Enter")
    w.idle()
    page.click("#restore")
    w.idle()
    restored_at = page.evaluate("playground.steps.length")
    # A pasted sequence, played step by step.
    page.fill("#sequence", "0.2 0.1 0.3\n# a comment\n-1, 0.5, 0.9\n0.5 0 0.1\n")
    page.click("#play")
    w.wait("() => !document.getElementById('play').disabled")
    w.idle()

    steps = page.evaluate("playground.steps")
    assert len(steps) >= 3 + 2 + 1 + 2 + 3, [s["x"] for s in steps]  # a drag: 2 or more
    assert all("error" not in s for s in steps), steps
    local = sg.Stream(cli_model, stop=[sg.StopHead(0.6)], max_steps=6)
    expected, saved = [], None
    for i, s in enumerate(steps):
        if i == saved_at:
            saved = local.get_state()
        if i == restored_at:
            local.set_state(saved)
        expected.append(local.step(np.array(s["x"], np.float32)))
    assert_outputs_equal([np.array(s["out"], np.float32) for s in steps], expected)
    assert any(len(e) for e in expected)  # frames to draw
    # What was drawn and listed: every Out[i], STOP marks where under the cap.
    outs = page.evaluate("playground.outs")
    assert len(outs) == len(steps)
    drawn = page.evaluate("playground.drawn")
    assert drawn == {"segments": sum(len(o) > 0 for o in outs),
                     "stops": sum(len(o) < 6 for o in outs),
                     "empty": sum(len(o) == 0 for o in outs)}
    assert page.locator("#list li").count() == len(outs)
    assert page.locator("#list li").nth(0).inner_text().startswith(
        "\u2205 empty" if not outs[0] else "[")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    if os.environ.get("STREAMGEN_SCREENSHOT"):  # to refresh docs/playground.png
        page.screenshot(path=os.environ["STREAMGEN_SCREENSHOT"], full_page=True)
    # The canvas is not blank: pixels of the frames' colour (blue) and of STOP marks (red).
    painted, blue, red = page.evaluate("""() => {
        const c = document.getElementById('plot');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0, blue = 0, red = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i + 3] === 0) continue;
            painted++;
            if (d[i + 2] - d[i] > 60) blue++;
            if (d[i] - d[i + 2] > 80) red++;
        }
        return [painted, blue, red];
    }""")
    assert blue > 100 and (red > 10) == (drawn["stops"] > 0), (painted, blue, red)
    assert page.locator("#token-form").is_hidden()  # no --token here
    assert (tmp_path / "playground.png").stat().st_size > 10_000
    # Reset: a fresh stream and drawing.
    page.click("#reset")
    w.wait("() => playground.outs.length === 0")
    page.goto(web_serve["web"])  # no trailing slash: relative URLs still right
    w.wait("() => playground.connected && playground.settings.stop !== null")
    page.fill("#typed", "0.5 0 0.1")
    page.press("#typed", "Enter")
    w.idle()
    assert_outputs_equal([np.array(page.evaluate("playground.outs[0]"), np.float32)],
                         [sg.Stream(cli_model).step(np.array([0.5, 0, 0.1], np.float32))])
    assert w.console_errors == [] and w.failed == []
    own = (f"http://127.0.0.1:{web_serve['port']}/web", f"ws://127.0.0.1:{web_serve['port']}/web")
    assert w.urls and all(u.startswith(own) for u in w.urls), w.urls
    w.close()


OPEN_WS = """async ([url, protocols]) => {
    const ws = new WebSocket(url, protocols);
    return await new Promise((resolve) => {
        const seen = {opened: false, protocol: null, replies: []};
        ws.onopen = () => {
            seen.opened = true; seen.protocol = ws.protocol; ws.send('[0.5, 0, 0.1]');
        };
        ws.onmessage = (e) => { seen.replies.push(JSON.parse(e.data)); ws.close(1000); };
        ws.onclose = (e) => { seen.code = e.code; resolve(seen); };
    });
}"""


@pytest.fixture()
def elsewhere():
    """A blank page at another origin: `http://127.0.0.1:OTHER`."""
    import http.server
    import threading

    class Blank(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blank)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_browser_origins_and_token(browser, web_serve, cli_model, elsewhere):
    expected = sg.Stream(cli_model).step(np.array([0.5, 0, 0.1], np.float32))
    ws_web, ws_tok = web_serve["ws"] + "/v1/streams", web_serve["wstok"] + "/v1/streams"
    # A page of another origin: refused (403), no reply. A local one (so that
    # Chromium lets it reach 127.0.0.1): a blank page on another port.
    w = Watched(browser)
    w.page.goto(elsewhere + "/")
    seen = w.page.evaluate(OPEN_WS, [ws_web, []])
    assert seen == {"opened": False, "protocol": None, "replies": [], "code": 1006}
    assert any("403" in e for e in w.console_errors), w.console_errors
    seen = w.page.evaluate(OPEN_WS, [ws_tok, ["streamgen.v1", "bearer." + WEB_TOKEN]])
    assert not seen["opened"] and seen["replies"] == []  # a token does not lift it
    assert sum("403" in e for e in w.console_errors) == 2, w.console_errors
    # A public site: no reply either (Chromium's own local-network check may
    # stop it before the server's).
    w.page.route(EVIL + "/**", lambda route: route.fulfill(
        body="<!doctype html><title>evil</title>", content_type="text/html"))
    w.page.goto(EVIL + "/")
    seen = w.page.evaluate(OPEN_WS, [ws_web, []])
    assert not seen["opened"] and seen["replies"] == []
    w.close()
    # The server's own page connects; with --token only with the right subprotocol.
    w = Watched(browser)
    w.page.goto(web_serve["web"] + "/")
    seen = w.page.evaluate(OPEN_WS, [ws_web, ["streamgen.v1"]])
    assert seen["opened"] and seen["protocol"] == "streamgen.v1"
    assert_outputs_equal([np.array(seen["replies"][0], np.float32)], [expected])
    w.close()
    w = Watched(browser)
    w.page.goto(web_serve["webtok"] + "/")
    w.wait("() => !document.getElementById('token-form').hidden")
    assert not w.page.evaluate("playground.connected")
    for protocols in (["streamgen.v1"], ["streamgen.v1", "bearer.wrong"], []):
        seen = w.page.evaluate(OPEN_WS, [ws_tok, protocols])
        assert not seen["opened"] and seen["replies"] == [], protocols
    seen = w.page.evaluate(OPEN_WS, [ws_tok, ["streamgen.v1", "bearer." + WEB_TOKEN]])
    assert seen["opened"] and seen["protocol"] == "streamgen.v1"  # never the token
    assert_outputs_equal([np.array(seen["replies"][0], np.float32)], [expected])
    # The page's own token form: wrong, then right.
    w.page.fill("#token", "wrong")
    w.page.click("#token-form button")
    w.wait("() => playground.errors.includes('wrong token')")
    w.page.fill("#token", WEB_TOKEN)
    w.page.click("#token-form button")
    w.wait("() => playground.connected && playground.settings.stop !== null")
    w.page.fill("#typed", "0.5 0 0.1")
    w.page.press("#typed", "Enter")
    w.idle()
    assert_outputs_equal([np.array(w.page.evaluate("playground.outs[0]"), np.float32)],
                         [expected])
    assert all(WEB_TOKEN not in u for u in w.urls), w.urls  # never in a URL
    w.close()
