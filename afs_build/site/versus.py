"""What a reader looks for first: each specialist against its base, and with against without
retrieval.

The comparison (``compare:<specialist>``) pairs the specialist's replies with its base's on the
same questions; its verdict is "better than its base" only when the 95% interval of the
own-category difference lies above zero. The same paired blocks over the general category say
whether training made it forget what the base knew, and the quantization table what the served
type costs in answers against the F16. Retrieval's effect (``eval:<specialist>``) is the same
paired table with retrieval as one side and no retrieval as the other.
"""

from __future__ import annotations

from typing import Optional

from ..manifest import Manifest
from ..paths import Layout
from . import charts
from .inputs import read_json

FORGETS = "forgets general questions"
KEEPS = "no measurable forgetting"
GAINS = "better on general questions"


def forgetting(block: Optional[dict]) -> Optional[str]:
    """What the general-category difference says: forgot (interval below zero), gained (above)
    or neither; None when no general question was paired."""
    if not block or not block.get("questions"):
        return None
    if block.get("worse") or block["high"] < 0:
        return FORGETS
    if block.get("better") or block["low"] > 0:
        return GAINS
    return KEEPS


def quant_cost(compare: Optional[dict], served: str) -> Optional[dict]:
    """The served type's score and agreement with the F16's replies, and the F16's score."""
    table = (compare or {}).get("quantization") or {}
    mine, f16 = table.get(served), table.get("F16")
    if not mine:
        return None
    drop = None
    if f16 and mine.get("mean_score") is not None and f16.get("mean_score") is not None:
        drop = round(mine["mean_score"] - f16["mean_score"], 4)
    return {"kind": served, "score": mine.get("mean_score"), "agreement": mine.get("agreement_with_f16"),
            "f16_score": (f16 or {}).get("mean_score"), "difference": drop, "questions": mine.get("questions")}


def headline(manifest: Manifest, name: str) -> Optional[dict]:
    """One specialist's verdict against its base, forgetting, the served type's cost and the
    effect of retrieval; None for a specialist served as it is."""
    from ..deploy.server import served_kind

    spec = manifest.specialists[name]
    if not spec.train or not manifest.eval.suite:
        return None
    layout = Layout.of(manifest)
    compare = read_json(layout.compare(name).report)
    effect = read_json(layout.eval(name).retrieval_effect) if spec.retrieval else None
    return {"name": name, "spec": spec, "compared": compare is not None,
            "verdict": (compare or {}).get("verdict"), "own": (compare or {}).get("own"),
            "own_categories": (compare or {}).get("own_categories") or list(spec.categories or ()),
            "general": (compare or {}).get("general"), "overall": (compare or {}).get("overall"),
            "general_category": manifest.eval.general_category,
            "forgetting": forgetting((compare or {}).get("general")),
            "quant": quant_cost(compare, served_kind(spec)),
            "retrieval": effect, "retrieves": spec.retrieval is not None}


def family(manifest: Manifest) -> dict:
    """Every trained specialist's headline, and a chart of the own and general differences
    from the base with their intervals."""
    rows = [h for h in (headline(manifest, s.name) for s in manifest.trained) if h is not None]
    compared = [r for r in rows if r["compared"]]
    chart = None
    if compared:
        def point(block):
            return None if not block or not block.get("questions") else (
                block["difference"], block["low"], block["high"])

        series = [("own categories", [point(r["own"]) for r in compared], False),
                  ("general (forgetting)", [point(r["general"]) for r in compared], False)]
        chart = charts.error_bars(
            "chart-family-versus", "Difference from the base (specialist − base, 95% interval)",
            [r["name"] for r in compared], series, "score difference", y_range=(-1, 1),
            caption="Above zero: the specialist answers better than its base on the same questions. "
                    "A whisker that crosses zero is no evidence either way.")
    return {"rows": rows, "chart": chart, "compared": len(compared),
            "better": sum(1 for r in compared if r["verdict"] == "better than its base"),
            "forgets": [r["name"] for r in compared if r["forgetting"] == FORGETS]}


def retrieval_effect(manifest: Manifest, name: str, effect: Optional[dict]) -> Optional[dict]:
    """The with/without table of a retrieving specialist as page rows and a chart."""
    if effect is None:
        return None
    groups = [(f"own ({', '.join(effect.get('own_categories') or []) or 'none'})", effect.get("own")),
              (f"general ({effect.get('general_category')})", effect.get("general")),
              ("overall", effect.get("overall"))]
    by_category = sorted((effect.get("by_category") or {}).items())
    chart = None
    shown = [(c, b) for c, b in by_category if b.get("questions")]
    if shown:
        chart = charts.bars(charts.chart_id(name, "retrieval"), "Mean score with and without retrieval",
                            [c for c, _ in shown], [("with retrieval", [b["mean_a"] for _, b in shown]),
                                                    ("without", [b["mean_b"] for _, b in shown])],
                            "mean score", y_range=(0, 1), order=["with retrieval", "without"])
    return {"effect": effect, "groups": groups, "by_category": by_category, "chart": chart}


def index(manifest: Manifest, name: str) -> dict:
    """An index's sidecar (chunks, files, skips, model) and its measured quality, as found."""
    layout = Layout.of(manifest)
    report = read_json(layout.index(name).report)
    quality = read_json(layout.index(name).quality) if manifest.retrieval.indexes[name].questions else None
    modes = ((quality or {}).get("modes") or {})
    rows = [{"mode": mode, **(block.get("overall") or {})} for mode, block in modes.items()]
    chart = None
    if rows:
        ks = [k for k in ("recall@1", "recall@5", "recall@10", "mrr")]
        chart = charts.bars(charts.chart_id("index", name, "quality"), f"Search quality of index {name}",
                            ks, [(r["mode"], [r.get(k) for k in ks]) for r in rows], "fraction",
                            y_range=(0, 1), order=list(modes))
    return {"name": name, "index": manifest.retrieval.indexes[name], "report": report, "quality": quality,
            "rows": rows, "chart": chart, "has_questions": bool(manifest.retrieval.indexes[name].questions)}
