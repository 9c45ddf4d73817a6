"""The contexts of the family pages: home, comparison dashboard, costs and lineage.

Each page gets one function of the manifest (and, for the home page, the servers' states as
checked when the site is built). Every specialist appears in every table, with dashes where
its stages have not run yet.
"""

from __future__ import annotations

from typing import Optional

from ..manifest import Manifest
from ..paths import Layout
from . import charts, versus
from . import inputs
from .inputs import read_json, read_jsonl, relative
from .results import by_category, mean_interval

FLOAT_TYPES = ("F16", "BF16", "F32")


def home(manifest: Manifest, states: dict[str, str]) -> dict:
    """One row per specialist: what it is, what it was trained on, how it scores, where it runs."""
    layout = Layout.of(manifest)
    rows = []
    for spec in manifest.specialists.values():
        summary = read_json(layout.train(spec.name).summary) if spec.train else None
        compare = read_json(layout.compare(spec.name).report) if spec.train and manifest.eval.suite else None
        evaluated = read_json(layout.eval(spec.name).summary) if manifest.eval.suite else None
        quant = read_json(layout.post(spec.name).quantize_report) or {}
        files = quant.get("files") or {}
        general = manifest.eval.general_category
        afs = (summary or {}).get("afs") or {}
        rows.append({
            "spec": spec, "samples": (summary or {}).get("train_samples"),
            "tokens": (summary or {}).get("tokens_seen"), "seconds": afs.get("wall_seconds"),
            "cost": afs.get("cost"), "own": (compare or {}).get("own"),
            "own_categories": (compare or {}).get("own_categories") or [],
            "verdict": (compare or {}).get("verdict"), "general": (compare or {}).get("general"),
            "general_score": (((evaluated or {}).get("by_category") or {}).get(general) or {}).get("mean_score"),
            "score": (evaluated or {}).get("mean_score"),
            "quants": [(name[len(spec.name) + 1:-5], entry.get("bytes")) for name, entry in sorted(files.items())
                       if name[len(spec.name) + 1:-5] not in FLOAT_TYPES],
            "deployed": layout.deploy(spec.name).report.exists(), "state": states.get(spec.name, "unknown"),
            "forgetting": versus.forgetting((compare or {}).get("general")),
            "agreement": {k: q.get("agreement_with_f16") for k, q in ((compare or {}).get("quantization") or {}).items()},
        })
    family = read_json(layout.family_report) if manifest.eval.suite and manifest.trained else None
    return {"rows": rows, "family": family, "trained": len(manifest.trained),
            "better": sum(1 for r in rows if r["verdict"] == "better than its base")}


def _scores(manifest: Manifest) -> tuple[dict, dict, list]:
    """{model: {category: scores}}, the base's pooled scores and the categories."""
    layout = Layout.of(manifest)
    models: dict[str, dict] = {}
    base: dict[str, list] = {}
    for spec in manifest.specialists.values():
        found = read_jsonl(layout.eval(spec.name).results) if manifest.eval.suite else None
        if found:
            models[spec.name] = by_category(found)
        if spec.train and manifest.eval.suite:
            for category, scores in by_category(read_jsonl(layout.compare(spec.name).base_results) or []).items():
                base.setdefault(category, []).extend(scores)
    categories = sorted({c for m in models.values() for c in m} | set(base))
    return models, base, categories


def dashboard(manifest: Manifest) -> dict:
    """The comparison charts: per-category scores with intervals, a radar, speed against score,
    what each quantization costs, and each specialist's history across versions."""
    layout = Layout.of(manifest)
    seed = manifest.eval.seed
    models, base, categories = _scores(manifest)
    bases = sorted({s.base for s in manifest.trained})
    base_label = f"base ({', '.join(bases)})" if bases else "base"
    series = [(name, [mean_interval(m.get(c, []), seed) for c in categories], False) for name, m in models.items()]
    if base:
        series.append((base_label, [mean_interval(base.get(c, []), seed) for c in categories], True))
    out: dict = {"categories": categories, "models": list(models), "base_label": base_label if base else None}
    out["scores"] = charts.error_bars(
        "chart-family-categories", "Score per category, every model and the base (95% interval)", categories,
        series, "mean score", y_range=(0, 1), order=list(manifest.specialists),
        caption="The base is asked every question its specialists are asked, with each one's system "
                "prompt; its bars pool those answers.") if series and categories else None

    def overall(scores: dict) -> float:
        values = [v for s in scores.values() for v in s]
        return sum(values) / len(values) if values else 0.0

    ranked = sorted([(overall(m), n, m, False) for n, m in models.items()] +
                    ([(overall(base), base_label, base, True)] if base else []), key=lambda t: (-t[0], t[1]))
    shown, left = ranked[:charts.RADAR_MAX], ranked[charts.RADAR_MAX:]
    out["radar"] = charts.radar(
        "chart-family-radar", "Mean score per category", categories,
        [(n, [round(sum(m[c]) / len(m[c]), 4) if m.get(c) else None for c in categories], b) for _, n, m, b in shown],
        order=list(manifest.specialists), caption=f"The {len(shown)} best-scoring models overall" +
                (f"; not shown: {', '.join(n for _, n, _, _ in left)}" if left else "")) if shown and categories else None
    out["speed"], out["quants"], out["quant_rows"] = _speed_and_quants(manifest)
    out["history"], out["history_rows"] = _history(manifest)
    out["versus"] = versus.family(manifest)
    out["indexes"] = [versus.index(manifest, n) for n in manifest.retrieval.indexes]
    out["retrieval"] = [versus.retrieval_effect(manifest, s.name, read_json(layout.eval(s.name).retrieval_effect))
                        for s in manifest.specialists.values() if s.retrieval and manifest.eval.suite]
    out["retrieving"] = [s for s in manifest.specialists.values() if s.retrieval]
    out["reports"] = [{"path": rel, "shown": relative(manifest, path)} for rel, path in inputs.reports(manifest)]
    return out


def _speed_and_quants(manifest: Manifest) -> tuple[Optional[charts.Chart], Optional[charts.Chart], list]:
    layout = Layout.of(manifest)
    served, quantized, rows = [], [], []
    for spec in manifest.specialists.values():
        summary = read_json(layout.eval(spec.name).summary) if manifest.eval.suite else None
        if summary and summary.get("tokens_per_second") is not None and summary.get("mean_score") is not None:
            served.append((summary["tokens_per_second"], summary["mean_score"], spec.name))
        compare = read_json(layout.compare(spec.name).report) if spec.train and manifest.eval.suite else None
        for kind, q in ((compare or {}).get("quantization") or {}).items():
            rows.append({"specialist": spec.name, "kind": kind, **q})
            if q.get("tokens_per_second") is not None and q.get("mean_score") is not None:
                quantized.append((q["tokens_per_second"], q["mean_score"], f"{spec.name} {kind}"))
    speed = charts.scatter("chart-family-speed", "Speed against score",
                           [s for s in (("served models (all questions)", served),
                                        ("each quantized file (first questions)", quantized)) if s[1]],
                           "tokens/s", "mean score", y_range=(0, 1)) if served or quantized else None
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    names = list(dict.fromkeys(r["specialist"] for r in rows))
    table = {(r["specialist"], r["kind"]): r for r in rows}
    quants = charts.bars("chart-family-quants", "Replies identical to the F16's, per type", kinds,
                         [(n, [(table.get((n, k)) or {}).get("agreement_with_f16") for k in kinds]) for n in names],
                         "fraction of replies", y_range=(0, 1), order=list(manifest.specialists),
                         caption="What a quantization costs in answers: the share of questions its "
                                 "file answers exactly as the F16 does.") if rows else None
    return speed, quants, rows


def _history(manifest: Manifest) -> tuple[Optional[charts.Chart], list]:
    layout = Layout.of(manifest)
    series, rows = [], []
    for spec in manifest.trained:
        past = read_jsonl(layout.compare(spec.name).history) if manifest.eval.suite else None
        if not past:
            continue
        series.append((spec.name, [(i + 1, p.get("own_mean")) for i, p in enumerate(past)]))
        rows += [{"specialist": spec.name, "number": i + 1, **p} for i, p in enumerate(past)]
    chart = charts.line("chart-family-history", "Own-category score of each version", series,
                        "version (in build order)", "mean score", order=list(manifest.specialists),
                        whole_x=True) if series else None
    return chart, rows


def costs(manifest: Manifest) -> dict:
    """Training time and cost per specialist, estimated and actual, in the seed's form, and the
    total per training session."""
    from ..estimate import training_costs

    lines = training_costs(manifest)
    rows = [{"line": c, "spec": manifest.specialists[c.specialist],
             "backend": manifest.hardware[c.hardware].backend,
             "epochs": manifest.specialists[c.specialist].epochs} for c in lines]
    local = sum(c.estimate.hours for c in lines if manifest.hardware[c.hardware].backend == "local")
    rented = [c.estimate.hours for c in lines if manifest.hardware[c.hardware].backend != "local"]
    actual = [c for c in lines if c.actual_hours is not None]
    return {"rows": rows, "total_cost": sum(c.estimate.cost for c in lines),
            "total_hours": sum(c.estimate.hours for c in lines), "wall_hours": local + max(rented, default=0.0),
            "actual_cost": sum(c.actual_cost or 0.0 for c in actual) if actual else None,
            "actual_hours": sum(c.actual_hours for c in actual) if actual else None,
            "actual_count": len(actual)}


def lineage(manifest: Manifest) -> list[dict]:
    """For each served file, what produced it: manifest slice → data → base and adapter → GGUF
    → quantized file → server."""
    from ..deploy.server import served_kind
    from ..training.script import settings_digest
    from ..uptodate import file_digest, sampled_digest, slice_digest

    layout = Layout.of(manifest)
    out = []
    for spec in manifest.specialists.values():
        post, kind = layout.post(spec.name), served_kind(spec)
        steps = []
        summary = read_json(layout.train(spec.name).summary) if spec.train else None
        if spec.train:
            now = settings_digest(manifest, spec.name)
            trained = (summary or {}).get("manifest_digest")
            steps.append({"step": "manifest slice", "what": f"specialists.{spec.name} with its model, "
                          f"hardware and the loop's defaults", "digest": trained or now,
                          "ok": None if trained is None else trained == now,
                          "note": None if trained in (None, now) else f"the manifest now reads {now[:12]}: "
                          f"the next doit retrains"})
            mix = layout.mix(spec.name)
            stats = read_json(mix.stats) or {}
            for split in ("train", "eval"):
                path = getattr(mix, split)
                steps.append({"step": f"data ({split})", "what": f"{(stats.get(split) or {}).get('samples', '–')} samples "
                              f"from {', '.join(manifest.mixes[spec.mix].sources)}", "path": relative(manifest, path),
                              "digest": file_digest(path) if path.is_file() else None})
        else:
            steps.append({"step": "manifest slice", "what": f"models.{spec.base} (served as it is)",
                          "digest": slice_digest(manifest.models[spec.base]), "ok": None})
        base = read_json(layout.base(spec.base).report)
        steps.append({"step": "base model", "what": spec.base, "digest": (base or {}).get("digest"),
                      "path": relative(manifest, (base or {}).get("load"))})
        if spec.train:
            weights = layout.train(spec.name).adapter / "adapter_model.safetensors"
            steps.append({"step": "adapter", "what": f"{(summary or {}).get('steps', '–')} steps, train loss "
                          f"{_num((summary or {}).get('train_loss'))}", "path": relative(manifest, weights),
                          "digest": sampled_digest(weights) if weights.is_file() else None})
        gguf = read_json(post.gguf_report) or {}
        f16 = post.gguf("F16").name
        steps.append({"step": "GGUF", "what": "F16, " + ("adapter merged while converting" if spec.train else "converted"),
                      "path": relative(manifest, post.gguf("F16")),
                      "digest": ((gguf.get("files") or {}).get(f16) or {}).get("digest"),
                      "ok": _parity(gguf)})
        quant = read_json(post.quantize_report) or {}
        served = post.gguf(kind)
        steps.append({"step": "quantized file", "what": kind, "path": relative(manifest, served),
                      "digest": ((quant.get("files") or {}).get(served.name) or {}).get("digest")})
        deployed = read_json(layout.deploy(spec.name).report)
        steps.append({"step": "served", "what": (deployed or {}).get("url") or f"port {spec.port} (not deployed yet)",
                      "digest": (deployed or {}).get("digest"), "path": relative(manifest, (deployed or {}).get("gguf"))})
        out.append({"spec": spec, "file": served.name, "steps": steps})
    return out


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _parity(gguf: dict) -> Optional[bool]:
    checks = [gguf[k].get("ok") for k in ("tokenization", "generation") if isinstance(gguf.get(k), dict)]
    return None if not checks else all(checks)
