"""Chart.js configurations from numbers: plain dicts that a page embeds as JSON.

Each function returns a :class:`Chart`: its canvas id, a caption, the configuration that
``afs-site.js`` hands to ``new Chart(canvas, config)`` and how many data points it has (the
browser tests check that the drawn chart has exactly those). Colours come from one fixed
palette, the base always grey, so a model keeps its colour from chart to chart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

PALETTE = ("#3f51b5", "#e91e63", "#009688", "#ff9800", "#9c27b0", "#795548", "#2196f3",
           "#8bc34a", "#f44336", "#607d8b")
BASE_COLOUR = "#9e9e9e"
RADAR_MAX = 5  # models on one radar: more are unreadable


@dataclass(frozen=True)
class Chart:
    id: str
    caption: str
    config: dict
    points: int


def colour(index: int, base: bool = False) -> str:
    return BASE_COLOUR if base else PALETTE[index % len(PALETTE)]


def _tint(name: str, index: int, order: Optional[Sequence[str]], base: bool = False) -> str:
    """A series' colour: by its name's place in `order` (the family's), else by position."""
    if order is not None and name in order:
        index = list(order).index(name)
    return colour(index, base)


def chart_id(*parts: str) -> str:
    """A canvas id from names (which are slugs already, but ids must not depend on that)."""
    return "chart-" + "-".join(re.sub(r"[^a-z0-9_-]+", "-", p.lower()) for p in parts)


def _options(title: str, x: Optional[str] = None, y: Optional[str] = None,
             y_range: Optional[tuple] = None, x_linear: bool = False) -> dict:
    scales: dict = {}
    if x is not None or x_linear:
        scales["x"] = {"title": {"display": bool(x), "text": x or ""}}
        if x_linear:
            scales["x"]["type"] = "linear"
    if y is not None:
        scales["y"] = {"title": {"display": True, "text": y}, "beginAtZero": True}
        if y_range:
            scales["y"]["min"], scales["y"]["max"] = y_range
    return {"responsive": True, "maintainAspectRatio": False, "animation": False,
            "plugins": {"title": {"display": True, "text": title}}, "scales": scales}


def _count(datasets: Sequence[dict]) -> int:
    return sum(len(d["data"]) for d in datasets)


def line(id: str, title: str, series: Sequence[tuple[str, Sequence[tuple[float, Optional[float]]]]],
         x: str, y: str, caption: str = "", order: Optional[Sequence[str]] = None,
         whole_x: bool = False) -> Chart:
    """Lines over a numeric x axis: `series` is ``[(label, [(x, y), ...]), ...]``; `whole_x`
    puts ticks on whole numbers only (versions, not steps)."""
    datasets = [{"label": label, "data": [{"x": px, "y": py} for px, py in points],
                 "borderColor": _tint(label, i, order), "backgroundColor": _tint(label, i, order),
                 "pointRadius": 3, "spanGaps": True}
                for i, (label, points) in enumerate(series)]
    options = _options(title, x, y, x_linear=True)
    if whole_x:
        options["scales"]["x"]["ticks"] = {"stepSize": 1, "precision": 0}
    return Chart(id, caption, {"type": "line", "data": {"datasets": datasets}, "options": options},
                 _count(datasets))


def bars(id: str, title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[Optional[float]]]],
         y: str, caption: str = "", y_range: Optional[tuple] = None, x: Optional[str] = None,
         order: Optional[Sequence[str]] = None) -> Chart:
    """Grouped bars: one bar per label for each of `series` (``[(name, values), ...]``)."""
    datasets = [{"label": name, "data": list(values), "backgroundColor": _tint(name, i, order)}
                for i, (name, values) in enumerate(series)]
    return Chart(id, caption, {"type": "bar", "data": {"labels": list(labels), "datasets": datasets},
                               "options": _options(title, x or "", y, y_range)}, _count(datasets))


def error_bars(id: str, title: str, labels: Sequence[str],
               series: Sequence[tuple[str, Sequence[Optional[tuple[float, float, float]]], bool]],
               y: str, caption: str = "", y_range: Optional[tuple] = None,
               order: Optional[Sequence[str]] = None) -> Chart:
    """Grouped bars with interval whiskers (chartjs-chart-error-bars): `series` is
    ``[(name, [(value, low, high) or None, ...], is_base), ...]``."""
    datasets = []
    index = 0
    for name, values, is_base in series:
        # A missing value is an object of nulls: the plugin reads yMin of every item.
        data = [{"y": None, "yMin": None, "yMax": None} if v is None else {"y": v[0], "yMin": v[1], "yMax": v[2]}
                for v in values]
        datasets.append({"label": name, "data": data, "backgroundColor": _tint(name, index, order, is_base)})
        index += 0 if is_base else 1
    return Chart(id, caption, {"type": "barWithErrorBars",
                               "data": {"labels": list(labels), "datasets": datasets},
                               "options": _options(title, "", y, y_range)}, _count(datasets))


def radar(id: str, title: str, labels: Sequence[str],
          series: Sequence[tuple[str, Sequence[Optional[float]], bool]], caption: str = "",
          order: Optional[Sequence[str]] = None) -> Chart:
    """Scores per category as a radar: at most :data:`RADAR_MAX` models."""
    if len(series) > RADAR_MAX:
        raise ValueError(f"a radar of {len(series)} models; at most {RADAR_MAX} are readable")
    datasets = []
    index = 0
    for name, values, is_base in series:
        tint = _tint(name, index, order, is_base)
        datasets.append({"label": name, "data": list(values), "borderColor": tint,
                         "backgroundColor": tint + "33", "pointBackgroundColor": tint, "spanGaps": True})
        index += 0 if is_base else 1
    options = _options(title)
    options["scales"] = {"r": {"min": 0, "max": 1, "ticks": {"stepSize": 0.25}}}
    return Chart(id, caption, {"type": "radar", "data": {"labels": list(labels), "datasets": datasets},
                               "options": options}, _count(datasets))


def scatter(id: str, title: str, series: Sequence[tuple[str, Sequence[tuple[float, float, str]]]],
            x: str, y: str, caption: str = "", y_range: Optional[tuple] = None) -> Chart:
    """Points with a label each (shown in the tooltip): ``[(name, [(x, y, label), ...]), ...]``."""
    datasets = [{"label": name, "data": [{"x": px, "y": py, "label": text} for px, py, text in points],
                 "backgroundColor": colour(i), "borderColor": colour(i), "pointRadius": 5}
                for i, (name, points) in enumerate(series)]
    return Chart(id, caption, {"type": "scatter", "data": {"datasets": datasets},
                               "options": _options(title, x, y, y_range, x_linear=True)}, _count(datasets))


def histogram(id: str, title: str, edges: Sequence[float], counts: Sequence[int], x: str,
              caption: str = "") -> Chart:
    """Counts per bin, labelled by the bin's range."""
    labels = [f"{edges[i]:.1f}–{edges[i + 1]:.1f}" for i in range(len(counts))]
    return bars(id, title, labels, [("samples", counts)], "samples", caption, x=x)
