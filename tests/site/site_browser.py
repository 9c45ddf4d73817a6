"""Headless Chromium driven over the Chrome DevTools protocol, and a loopback HTTP server.

Debian's ``chromium`` (installed by scripts/setup.sh), no browser download: the browser is
started with a fresh profile, a page target is attached in flat mode, and every console
message, uncaught exception, request, failed request and HTTP error is recorded, so a test
can assert that a page loaded cleanly and asked nothing of the outside world.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

CHROMIUM = ("chromium", "chromium-browser")


def chromium() -> str:
    for name in CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Chromium is not installed: scripts/setup.sh installs Debian's chromium "
                       "(apt-get install -y chromium)")


@contextlib.contextmanager
def http_server(folder: Path, port: int = 0) -> Iterator[str]:
    """Serve `folder` on loopback (a free port unless given); yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """One headless Chromium with one page; every event of that page is kept in `events`."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a profile used before: wait for this browser's
        self.process = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-features=Translate,MediaRouter,OptimizationHints",
             "--hide-scrollbars", "--force-color-profile=srgb", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self._connect(profile, width, height)
        except BaseException:
            self.close()
            raise

    def _connect(self, profile: Path, width: int, height: int) -> None:
        import websocket

        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Chromium did not open its DevTools port")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=30,
                                              suppress_origin=True, enable_multithread=True)
        self.next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.call(f"{domain}.enable")
        # Workers (Material's search) fetch through their own targets: attach to them too, so
        # their requests and errors are recorded like the page's.
        self.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True,
                                           "flatten": True})
        self.call("Network.setCacheDisabled", {"cacheDisabled": True})
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    # --- protocol ---------------------------------------------------------------------------

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 30) -> dict:
        self.next_id += 1
        own = self.next_id  # events handled while waiting may send messages of their own
        message: dict = {"id": own, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == own:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._event(reply)
        raise TimeoutError(f"{method}: no answer in {timeout} s")

    def call(self, method: str, params: Optional[dict] = None) -> dict:
        return self.send(method, params, self.session)

    def _post(self, method: str, params: dict, session: str) -> None:
        """Send without waiting (the reply is skipped when it arrives)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params,
                                 "sessionId": session}))

    def _event(self, message: dict) -> None:
        self.events.append(message)
        if message["method"] == "Target.attachedToTarget":
            session = message["params"]["sessionId"]
            for method in ("Network.enable", "Runtime.enable", "Log.enable"):
                self._post(method, {}, session)
            self._post("Runtime.runIfWaitingForDebugger", {}, session)

    def pump(self, seconds: float) -> None:
        """Collect events for `seconds`."""
        self.ws.settimeout(0.05)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    message = json.loads(self.ws.recv())
                except Exception:  # the socket's timeout: nothing arrived in this slice
                    continue
                if "method" in message:
                    self._event(message)
        finally:
            self.ws.settimeout(30)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what or predicate}")
            self.pump(0.1)

    # --- a page -----------------------------------------------------------------------------

    def goto(self, url: str, settle: float = 0.5) -> dict:
        """Load `url`; wait for the load event and for the network to go quiet. Returns the
        events of this load."""
        start = len(self.events)
        self.call("Page.navigate", {"url": url})
        self.wait_for(lambda: any(e["method"] == "Page.loadEventFired" for e in self.events[start:]),
                      what=f"the load of {url}")
        self.settle(start, settle)
        return self.report(start)

    def settle(self, start: int, quiet: float = 0.5, timeout: float = 15) -> None:
        """Wait until no request started since `start` is pending and `quiet` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self.pending(start)
            before = len(self.events)
            self.pump(quiet)
            if not pending and not self.pending(start) and len(self.events) == before:
                return
        raise TimeoutError(f"requests still pending: {sorted(self.pending(start))[:5]}")

    def pending(self, start: int) -> set:
        sent, done = {}, set()
        for e in self.events[start:]:
            if e["method"] == "Network.requestWillBeSent":
                sent[e["params"]["requestId"]] = e["params"]["request"]["url"]
            elif e["method"] in ("Network.loadingFinished", "Network.loadingFailed"):
                done.add(e["params"]["requestId"])
        return {url for rid, url in sent.items() if rid not in done}

    def report(self, start: int = 0) -> dict:
        """What happened since event `start`: requests, failures, HTTP errors, console errors."""
        urls, failed, errors, statuses = {}, [], [], []
        for e in self.events[start:]:
            method, p = e["method"], e.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[p["requestId"]] = p["request"]["url"]
            elif method == "Network.loadingFailed":
                failed.append(f"{urls.get(p['requestId'], p['requestId'])}: {p.get('errorText')}")
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
                statuses.append(f"{p['response']['url']}: HTTP {p['response']['status']}")
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert", "warning"):
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                details = p["exceptionDetails"]
                errors.append((details.get("exception") or {}).get("description") or details.get("text"))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"{p['entry'].get('url', '')}: {p['entry']['text']}")
        return {"requests": sorted(set(urls.values())), "failed": failed, "http_errors": statuses,
                "errors": errors}

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser and every process it started (its own process group)."""
        with contextlib.suppress(Exception):
            self.ws.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue


# What the tests ask each page: every chart's canvas, whether Chart.js drew it, its points.
CHARTS_JS = """
Array.from(document.querySelectorAll('canvas[data-afs-chart]')).map(function (canvas) {
  var chart = (typeof Chart !== 'undefined') && Chart.getChart(canvas);
  var painted = 0;
  if (canvas.width && canvas.height) {
    var pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (var i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) painted += 1; }
  }
  return {id: canvas.id, expected: Number(canvas.getAttribute('data-afs-points')),
          drawn: !!chart, type: chart ? chart.config.type : null,
          points: chart ? chart.data.datasets.reduce(function (n, d, i) {
            return n + chart.getDatasetMeta(i).data.length; }, 0) : 0,
          datasets: chart ? chart.data.datasets.map(function (d) { return d.label; }) : [],
          painted: painted, width: canvas.width, height: canvas.height};
})
"""

LINKS_JS = """
Array.from(document.querySelectorAll('a[href]')).map(function (a) { return a.href; })
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
