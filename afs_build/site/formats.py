"""How numbers read on the pages: sizes, durations, scores, intervals, money (Jinja filters).

Each takes None (a value the build has not produced) and shows it as a dash, so a template
never needs to test for it.
"""

from __future__ import annotations

from typing import Any, Optional

DASH = "–"


def size(value: Optional[float]) -> str:
    """Bytes as ``1.8 MiB``."""
    if value is None:
        return DASH
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{int(value)} B"


def duration(seconds: Optional[float]) -> str:
    """Seconds as ``25 s``, ``4.2 min`` or ``1.5 h``."""
    if seconds is None:
        return DASH
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def hours(value: Optional[float]) -> str:
    """Hours the way ``afs plan`` writes them: ``2.5hr``, ``4min``, ``30s``."""
    if value is None:
        return DASH
    if value >= 1:
        return f"{value:.1f}hr"
    if value * 60 >= 1:
        return f"{value * 60:.0f}min"
    return f"{value * 3600:.0f}s"


def money(value: Optional[float]) -> str:
    return DASH if value is None else f"${value:,.2f}"


def rate(value: Optional[float]) -> str:
    """A price per hour: ``$0.268/hr``."""
    return DASH if value is None else f"${value:.3f}/hr"


def score(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:.2f}"


def signed(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:+.2f}"


def interval(block: Optional[dict]) -> str:
    """A paired block's difference interval: ``[+0.01, +0.12]``."""
    if not block or not block.get("questions"):
        return DASH
    return f"[{block['low']:+.2f}, {block['high']:+.2f}]"


def percent(value: Optional[float]) -> str:
    return DASH if value is None else f"{value:.0%}"


def number(value: Any, digits: int = 0) -> str:
    """An integer with thousands separators, or a float with `digits` decimals."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def short(digest: Optional[str], length: int = 12) -> str:
    """The first characters of a digest (the full one is in the title attribute)."""
    return DASH if not digest else str(digest)[:length]


def plain_value(value: Any) -> str:
    """Any JSON value as short text, for the generic tables of fields a page does not know."""
    import json

    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)[:300]
    return str(value)


FILTERS = {"size": size, "duration": duration, "hours": hours, "money": money, "rate": rate,
           "score": score, "signed": signed, "interval": interval, "percent": percent,
           "number": number, "short": short, "plain_value": plain_value}
