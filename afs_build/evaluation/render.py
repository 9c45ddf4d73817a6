"""Replies meant to be seen, as self-contained HTML pages: Markdown, code, ANSI terminals, HTML.

A page has fixed fonts, size and colours (from ``eval.screenshots``) and a
Content-Security-Policy that loads nothing from outside it: a reply's HTML cannot fetch, and
Chromium runs it with scripts off.
"""

from __future__ import annotations

import html
import re

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src 'none'"
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_OTHER_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-ln-z]|\x1b\][^\x07]*\x07")
# xterm's 16 colours: normal 30-37 / 40-47, bright 90-97 / 100-107
COLOURS = ("#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
           "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff")


def page(reply: str, kind: str, *, font: str, mono_font: str, font_size: int, width: int) -> str:
    """The HTML page that shows `reply` as `kind` (markdown, code, ansi or html)."""
    if kind == "markdown":
        body = markdown(reply)
    elif kind == "code":
        body = f"<pre><code>{html.escape(_code(reply))}</code></pre>"
    elif kind == "ansi":
        body = f'<pre class="terminal">{ansi(reply)}</pre>'
    elif kind == "html":
        body = reply
    else:
        raise ValueError(f"unknown render kind {kind!r}")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}">
<style>
html, body {{ margin: 0; background: #ffffff; color: #111111; }}
body {{ width: {width - 32}px; padding: 16px; font-family: "{font}"; font-size: {font_size}px; line-height: 1.4; }}
pre, code {{ font-family: "{mono_font}"; font-size: {font_size}px; }}
pre {{ background: #f4f4f4; padding: 8px; white-space: pre-wrap; word-break: break-all; margin: 0 0 8px 0; }}
pre.terminal {{ background: #000000; color: #e5e5e5; }}
table {{ border-collapse: collapse; margin: 0 0 8px 0; }}
th, td {{ border: 1px solid #999999; padding: 2px 8px; text-align: left; }}
th {{ background: #eeeeee; }}
</style></head><body>{body}</body></html>
"""


def _code(reply: str) -> str:
    """The reply's fenced code blocks, or the whole reply when it has none."""
    blocks = re.findall(r"```[^\n]*\n(.*?)(?:```|\Z)", reply, re.S)
    return "\n".join(b.rstrip("\n") for b in blocks) if blocks else reply


def markdown(text: str) -> str:
    """Markdown (tables and fenced code included) as HTML, raw HTML in it escaped."""
    import markdown as md

    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return md.markdown(escaped, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")


def ansi(text: str) -> str:
    """A terminal transcript as HTML: SGR colours, bold and underline as styled spans."""
    text = _OTHER_ESCAPES.sub("", text.replace("\r\n", "\n"))
    out, state = [], {}
    position = 0
    for match in _SGR.finditer(text):
        out.append(_span(text[position:match.start()], state))
        position = match.end()
        codes = [int(c) for c in match.group(1).split(";") if c.isdigit()] or [0]
        i = 0
        while i < len(codes):
            code = codes[i]
            if code == 0:
                state = {}
            elif code == 1:
                state["bold"] = True
            elif code == 4:
                state["underline"] = True
            elif code in (22,):
                state.pop("bold", None)
            elif code in (24,):
                state.pop("underline", None)
            elif 30 <= code <= 37 or 90 <= code <= 97:
                state["fg"] = COLOURS[code - 30 if code < 90 else code - 82]
            elif 40 <= code <= 47 or 100 <= code <= 107:
                state["bg"] = COLOURS[code - 40 if code < 100 else code - 92]
            elif code == 39:
                state.pop("fg", None)
            elif code == 49:
                state.pop("bg", None)
            elif code in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
                state["fg" if code == 38 else "bg"] = _xterm256(codes[i + 2])
                i += 2
            elif code in (38, 48) and i + 4 < len(codes) and codes[i + 1] == 2:
                state["fg" if code == 38 else "bg"] = "#%02x%02x%02x" % tuple(min(255, c) for c in codes[i + 2:i + 5])
                i += 4
            i += 1
    out.append(_span(text[position:], state))
    return "".join(out)


def _span(text: str, state: dict) -> str:
    if not text:
        return ""
    if not state:
        return html.escape(text)
    style = ";".join(filter(None, [f"color:{state['fg']}" if "fg" in state else "",
                                   f"background:{state['bg']}" if "bg" in state else "",
                                   "font-weight:bold" if state.get("bold") else "",
                                   "text-decoration:underline" if state.get("underline") else ""]))
    return f'<span style="{style}">{html.escape(text)}</span>'


def _xterm256(n: int) -> str:
    if n < 16:
        return COLOURS[n]
    if n < 232:
        n -= 16
        levels = (0, 95, 135, 175, 215, 255)
        return "#%02x%02x%02x" % (levels[n // 36], levels[(n // 6) % 6], levels[n % 6])
    grey = 8 + 10 * (min(n, 255) - 232)
    return "#%02x%02x%02x" % (grey, grey, grey)
