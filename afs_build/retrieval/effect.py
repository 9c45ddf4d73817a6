"""What retrieval does for a specialist: the same questions with and without it, paired.

``eval:<specialist>`` asks a retrieving specialist its questions twice; this is the paired
table of the two (with retrieval as side a), per category and over its own categories, with
the same statistics as the comparison with the base (:mod:`afs_build.evaluation.compare`).
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

from ..manifest import Manifest
from ..paths import Layout


def effect(manifest: Manifest, name: str, questions: Sequence[dict], with_retrieval: Sequence[dict],
           without: Sequence[dict]) -> dict:
    from ..evaluation.compare import own_categories, table

    spec = manifest.specialists[name]
    own = own_categories(questions, name, spec.categories)
    report = table(with_retrieval, without, own=own, general=manifest.eval.general_category,
                   seed=manifest.eval.seed)
    report.pop("verdict", None)  # "better than its base" does not apply: the base here is itself
    hits = sum(1 for r in with_retrieval if r.get("retrieved"))
    return {"specialist": name, "index": spec.retrieval.index, "top_k": spec.retrieval.top_k,
            "train_context": spec.retrieval.train_context, "questions_with_context": hits, **report}


def section(manifest: Manifest, name: str) -> Optional[dict]:
    """The with/without table the last eval wrote for `name`, or None (for compare's report)."""
    path = Layout.of(manifest).eval(name).retrieval_effect
    if manifest.specialists[name].retrieval is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def line(title: str, report: dict) -> str:
    """One console line: own-category means with and without retrieval, the difference."""
    own = report["own"]
    return (f"{title} with retrieval from {report['index']}: own {own['mean_a']:.2f} vs "
            f"{own['mean_b']:.2f} without, difference {own['difference']:+.2f} "
            f"[{own['low']:+.2f}, {own['high']:+.2f}], {own['wins']}/{own['ties']}/{own['losses']} W/T/L")
