"""Headless Chromium, driven over the DevTools protocol on a pipe: HTML files to PNG images.

One browser serves every screenshot of a run (starting Chromium costs a second or more; a
screenshot a tenth of that). ``--remote-debugging-pipe`` speaks the protocol as JSON messages
separated by NUL bytes on file descriptors 3 (commands) and 4 (replies and events): no port,
no WebSocket library, nothing another local user can connect to. Scripts are off, the
network is off (no background networking, and pages are loaded from files with a
Content-Security-Policy that allows nothing outside them), the profile is a fresh folder, and
text is drawn without hinting or LCD anti-aliasing, so the same page draws the same pixels.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..errors import StageError

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--font-render-hinting=none",
         "--disable-lcd-text", "--force-color-profile=srgb", "--force-device-scale-factor=1",
         "--disable-features=Translate,MediaRouter,OptimizationHints", "--remote-debugging-pipe")
TIMEOUT_S = 60.0


def find() -> Optional[str]:
    """The Chromium binary: $AFS_CHROMIUM, /usr/bin/chromium (Debian's package), else one on PATH."""
    named = os.environ.get("AFS_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """A headless Chromium with one page of a fixed viewport; use as a context manager."""

    def __init__(self, width: int, height: int, binary: Optional[str] = None):
        self.width, self.height = width, height
        self.binary = binary or find()
        if self.binary is None:
            named = os.environ.get("AFS_CHROMIUM")
            raise StageError(f"AFS_CHROMIUM names {named}, which is not an executable file" if named else
                             "Chromium is not installed; screenshots and PNG charts need it: "
                             "apt-get install -y chromium fonts-dejavu-core (scripts/setup.sh does), or "
                             "export AFS_CHROMIUM=/path/to/chromium")
        self._id = 0
        self._buffer = b""

    def __enter__(self) -> "Browser":
        self.profile = tempfile.mkdtemp(prefix="afs-chromium-")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()
        # the child's fds 3 and 4 must be these pipes: move them out of the way first
        high = [os.dup2(fd, 200 + i) for i, fd in enumerate((to_child, from_child))]
        for fd in (to_child, from_child):
            os.close(fd)

        def child() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.log = open(Path(self.profile) / "chromium.log", "wb")
        self.process = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                        preexec_fn=child, close_fds=False, start_new_session=True)
        for fd in high:
            os.close(fd)
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable", session=True)
            self.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=True)
            self.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                             "deviceScaleFactor": 1, "mobile": False}, session=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self._send("Browser.close", {}, None)
                    self.process.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            if self.process.poll() is None:
                import signal

                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            for fd in (self._write, self._read):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def _send(self, method: str, params: dict, session: Optional[str]) -> int:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._id

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise StageError(f"Chromium did not answer within {TIMEOUT_S:g} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise StageError(f"Chromium exited (code {self.process.poll()}); its log: "
                                 f"{(Path(self.profile) / 'chromium.log').read_text(errors='replace')[-500:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: Optional[dict] = None, session: bool = False,
             wait_event: Optional[str] = None) -> dict:
        """Send a command; its result (and, with `wait_event`, wait for that event too)."""
        wanted = self._send(method, params or {}, self.session if session else None)
        deadline = time.monotonic() + TIMEOUT_S
        result, seen = None, wait_event is None
        while result is None or not seen:
            message = self._next(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise StageError(f"Chromium refused {method}: {message['error'].get('message')}")
                result = message.get("result", {})
            elif wait_event and message.get("method") == wait_event:
                seen = True
        return result

    def screenshot(self, page: Path, height: Optional[int] = None) -> bytes:
        """The PNG of the HTML file `page` at the viewport's width (and `height`, default the
        viewport's)."""
        self.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=True,
                  wait_event="Page.loadEventFired")
        clip = {"x": 0, "y": 0, "width": self.width, "height": height or self.height, "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True}, session=True)["data"]
        return base64.b64decode(data)
