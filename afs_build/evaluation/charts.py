"""Charts as SVG text (inline in the HTML reports), and as PNG through headless Chromium.

Two charts: the score per category (bars, one colour per model) and speed against score (one
point per model). SVG keeps the HTML pages self-contained and light; the PNGs are the same
SVG drawn by Chromium at a fixed size, so both show the same thing.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Optional, Sequence

WIDTH, HEIGHT = 900, 380
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")
FONT = "DejaVu Sans"
LEFT, RIGHT, TOP, BOTTOM = 56, 160, 24, 90


def _frame(title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="{FONT}" font-size="12">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
            f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="14">{escape(title)}</text>{body}</svg>\n')


def _y_axis(label: str, top: float, bottom: float, high: float) -> str:
    parts = []
    for i in range(6):
        value = high * i / 5
        y = bottom - (bottom - top) * i / 5
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e0e0e0"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.2g}</text>')
    parts.append(f'<text x="14" y="{(top + bottom) / 2:.1f}" transform="rotate(-90 14 {(top + bottom) / 2:.1f})" '
                 f'text-anchor="middle">{escape(label)}</text>')
    return "".join(parts)


def _legend(names: Sequence[str]) -> str:
    return "".join(f'<rect x="{WIDTH - RIGHT + 16}" y="{TOP + 18 * i}" width="12" height="12" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{WIDTH - RIGHT + 34}" y="{TOP + 18 * i + 11}">'
                   f'{escape(n)}</text>' for i, n in enumerate(names))


def categories(title: str, scores: dict[str, dict[str, Optional[float]]]) -> str:
    """Bars: for each category, each model's mean score (`scores`: model -> category -> score)."""
    models = list(scores)
    cats = sorted({c for per in scores.values() for c in per})
    top, bottom = TOP + 10, HEIGHT - BOTTOM
    body = [_y_axis("mean score", top, bottom, 1.0)]
    span = (WIDTH - RIGHT - LEFT) / max(1, len(cats))
    bar = max(2.0, min(24.0, (span - 8) / max(1, len(models))))
    for i, cat in enumerate(cats):
        x0 = LEFT + i * span + (span - bar * len(models)) / 2
        for j, model in enumerate(models):
            value = scores[model].get(cat)
            if value is None:
                continue
            h = (bottom - top) * max(0.0, min(1.0, value))
            body.append(f'<rect x="{x0 + j * bar:.1f}" y="{bottom - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(model)} {escape(cat)}: {value:.3f}</title></rect>')
        cx = LEFT + (i + 0.5) * span
        body.append(f'<text x="{cx:.1f}" y="{bottom + 14}" text-anchor="end" '
                    f'transform="rotate(-30 {cx:.1f} {bottom + 14})">{escape(cat)}</text>')
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    body.append(_legend(models))
    return _frame(title, "".join(body))


def speed(title: str, points: dict[str, tuple[Optional[float], Optional[float]]]) -> str:
    """One point per model: generation speed (tokens/s, x) against mean score (y)."""
    known = {m: p for m, p in points.items() if p[0] is not None and p[1] is not None}
    top, bottom = TOP + 10, HEIGHT - BOTTOM
    high = max([p[0] for p in known.values()] + [1.0]) * 1.1
    body = [_y_axis("mean score", top, bottom, 1.0)]
    for i in range(6):
        value = high * i / 5
        x = LEFT + (WIDTH - RIGHT - LEFT) * i / 5
        body.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{value:.0f}</text>')
    body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{bottom + 40}" text-anchor="middle">'
                f'completion tokens per second</text>')
    body.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#333"/>')
    for j, (model, (rate, score)) in enumerate(points.items()):
        if model not in known:
            continue
        x = LEFT + (WIDTH - RIGHT - LEFT) * rate / high
        y = bottom - (bottom - top) * max(0.0, min(1.0, score))
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{PALETTE[j % len(PALETTE)]}">'
                    f'<title>{escape(model)}: {rate:.1f} tokens/s, score {score:.3f}</title></circle>'
                    f'<text x="{x + 9:.1f}" y="{y + 4:.1f}">{escape(model)}</text>')
    body.append(_legend(list(points)))
    return _frame(title, "".join(body))


def to_png(svgs: dict[Path, str]) -> None:
    """Draw each SVG to its PNG path with Chromium (one browser for all)."""
    import tempfile

    from ..atomic import atomic_path
    from .chromium import Browser

    with tempfile.TemporaryDirectory(prefix="afs-charts-") as folder, Browser(WIDTH, HEIGHT) as browser:
        for i, (png, svg) in enumerate(svgs.items()):
            page = Path(folder) / f"chart{i}.html"
            page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>html,body{{margin:0}}'
                            f'</style></head><body>{svg}</body></html>', encoding="utf-8")
            data = browser.screenshot(page)
            with atomic_path(png) as tmp:
                tmp.write_bytes(data)
