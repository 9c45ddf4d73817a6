"""The context of one specialist's page: every section from the files its stages wrote.

A section is None when its files do not exist yet (the page says which task makes them); a
field a file lacks is None and shows as a dash. One function per section, one that gathers
them: :func:`context`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

from ..manifest import Manifest, plain
from ..paths import Layout, SiteFiles
from . import charts, results, versus
from . import inputs
from .inputs import read_json, read_jsonl, relative

MAX_POINTS = 1000  # per training curve: longer runs are thinned evenly
REJECT_EXAMPLES = 3


def context(manifest: Manifest, name: str) -> dict:
    """Everything the page of specialist `name` shows."""
    from ..deploy.server import served_kind

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    compare = read_json(layout.compare(name).report) if spec.train else None
    evaluated = read_jsonl(layout.eval(name).results) or []
    base_results = (read_jsonl(layout.compare(name).base_results) or []) if spec.train else []
    asked = suite(manifest)
    return {
        "spec": spec, "served": served_kind(spec),
        "manifest_yaml": manifest_slice(manifest, name),
        "data": data(manifest, name) if spec.train else None,
        "training": training(manifest, name) if spec.train else None,
        "artifacts": artifacts(manifest, name),
        "quantization": quantization(manifest, name, compare),
        "benchmark": results.benchmark(name, read_json(layout.eval(name).summary), compare, evaluated,
                                       base_results, manifest.eval.seed, f"base ({spec.base})",
                                       order=list(manifest.specialists)),
        "questions": results.questions(asked, evaluated, base_results),
        "screenshots": results.screenshots(layout.screenshots(name).folder,
                                           SiteFiles.of(manifest).docs / "specialists" / name, name),
        "usage": usage(manifest, name, asked),
        "versus": versus.headline(manifest, name),
        # the evaluation's own reports of this model (build/reports/eval/<name>/), where present
        "reports": [rel for rel, _ in inputs.reports(manifest) if name in rel.split("/")[:-1]],
        "retrieval": retrieval(manifest, name),
    }


def retrieval(manifest: Manifest, name: str) -> Optional[dict]:
    """A retrieving specialist's settings, what retrieval did to its scores and its index."""
    spec = manifest.specialists[name]
    if spec.retrieval is None:
        return None
    effect = read_json(Layout.of(manifest).eval(name).retrieval_effect) if manifest.eval.suite else None
    return {"settings": spec.retrieval, "effect": versus.retrieval_effect(manifest, name, effect),
            "index": versus.index(manifest, spec.retrieval.index), "suite": bool(manifest.eval.suite)}


def suite(manifest: Manifest) -> dict[str, dict]:
    """The benchmark's questions by id (empty without a suite)."""
    from ..evaluation import suite as suites

    if not manifest.eval.suite:
        return {}
    path = manifest.resolve(manifest.eval.suite)
    return {q["id"]: q for q in suites.load(path, manifest.eval.suite, specialists=list(manifest.specialists),
                                            judges=manifest.eval.judges)}


def manifest_slice(manifest: Manifest, name: str) -> str:
    """The specialist's entry with its mix and hardware, as YAML."""
    import yaml

    spec = manifest.specialists[name]
    entry = plain(spec)
    entry.pop("name")
    out: dict = {"specialists": {name: entry}}
    if spec.mix:
        mix = plain(manifest.mixes[spec.mix])
        mix["groups"] = {g.pop("name"): g for g in mix["groups"]}
        out["mixes"] = {spec.mix: {k: v for k, v in mix.items() if k != "name"}}
    if spec.hardware:
        out["hardware"] = {spec.hardware: {k: v for k, v in plain(manifest.hardware[spec.hardware]).items()
                                           if k != "name"}}
    out["models"] = {spec.base: {k: v for k, v in plain(manifest.models[spec.base]).items() if k != "name"}}
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100)


def data(manifest: Manifest, name: str) -> Optional[dict]:
    """Realized shares, quality histogram, rejects by reason (with examples), dedup and
    decontamination counts, and each source's ingest and score counts."""
    layout = Layout.of(manifest)
    stats = read_json(layout.mix(name).stats)
    if stats is None:
        return None
    train = stats.get("train", {})
    total_samples, total_tokens = train.get("samples") or 0, train.get("tokens") or 0
    groups, sources = [], []
    for group, g in stats.get("groups", {}).items():
        groups.append({"name": group, "share": g.get("share"), "realized": g.get("realized"),
                       "samples": g.get("samples"), "tokens": g.get("tokens"), "unique": g.get("unique"),
                       "repeated": g.get("repeated"), "available": g.get("available"),
                       "token_share": (g.get("tokens") or 0) / total_tokens if total_tokens else None})
        for source, s in g.get("sources", {}).items():
            sources.append({"group": group, "source": source, "samples": s.get("samples"),
                            "tokens": s.get("tokens"), "eval": s.get("eval"),
                            "sample_share": (s.get("samples") or 0) / total_samples if total_samples else None,
                            "token_share": (s.get("tokens") or 0) / total_tokens if total_tokens else None,
                            "ingest": read_json(layout.ingest(source).meta),
                            "score": read_json(layout.score(source).meta)})
    shares = charts.bars(charts.chart_id(name, "shares"), "Share of the mix per group",
                         [g["name"] for g in groups],
                         [("asked", [g["share"] for g in groups]),
                          ("realized (samples)", [g["realized"] for g in groups]),
                          ("realized (tokens)", [g["token_share"] for g in groups])],
                         "share", y_range=(0, 1)) if groups else None
    scores = stats.get("scores") or {}
    histogram = (charts.histogram(charts.chart_id(name, "quality"), "Quality scores of the mixed samples",
                                  scores["edges"], scores["counts"], "quality score")
                 if scores.get("counts") else None)
    return {"stats": stats, "groups": groups, "sources": sources, "shares": shares,
            "histogram": histogram, "unscored": scores.get("unscored"),
            "rejects": rejects(layout.mix(name).rejects), "dedup": stats.get("dedup") or {},
            "decontam": stats.get("decontam") or {}, "warnings": stats.get("warnings") or []}


def rejects(path: Path) -> list[dict]:
    """Rejected records counted by reason (the part before the first colon), with the first
    few of each as examples."""
    reasons: dict[str, dict] = {}
    for record in read_jsonl(path) or []:
        key = str(record.get("reason", "unknown")).split(":")[0]
        entry = reasons.setdefault(key, {"reason": key, "count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < REJECT_EXAMPLES:
            # rejects of different stages carry different fields (a near-duplicate has a line
            # but no file, a skipped file no line): the page reads each one as possibly absent
            entry["examples"].append({k: record.get(k) for k in ("source", "file", "line", "reason", "excerpt")})
    return sorted(reasons.values(), key=lambda e: (-e["count"], e["reason"]))


def _thin(rows: list) -> list:
    if len(rows) <= MAX_POINTS:
        return rows
    step = len(rows) / MAX_POINTS
    return [rows[int(i * step)] for i in range(MAX_POINTS - 1)] + [rows[-1]]


def training(manifest: Manifest, name: str) -> Optional[dict]:
    """The training summary and its curves: loss and eval loss, tokens/s per step."""
    layout = Layout.of(manifest)
    summary = read_json(layout.train(name).summary)
    metrics = read_jsonl(layout.train(name).metrics) or []
    if summary is None and not metrics:
        return None
    steps = _thin([m for m in metrics if m.get("step") is not None])
    evals = [(m["step"], m["eval_loss"]) for m in metrics if m.get("eval_loss") is not None]
    if not evals and summary:
        evals = [(e["step"], e["loss"]) for e in summary.get("eval_losses") or [] if e.get("loss") is not None]
    series = [("train loss", [(m["step"], m.get("loss")) for m in steps])]
    if evals:
        series.append(("eval loss", evals))
    loss = charts.line(charts.chart_id(name, "loss"), "Loss per step", series, "step", "loss") if steps else None
    speed = (charts.line(charts.chart_id(name, "speed"), "Training speed per step",
                         [("tokens/s", [(m["step"], m.get("tokens_per_second")) for m in steps])],
                         "step", "tokens/s") if steps else None)
    return {"summary": summary, "afs": (summary or {}).get("afs") or {}, "loss": loss, "speed": speed,
            "hyperparameters": sorted(((summary or {}).get("hyperparameters") or {}).items()),
            "steps": len(metrics)}


def artifacts(manifest: Manifest, name: str) -> list[dict]:
    """Every file the build made for the model, with its size and (sampled) digest."""
    from ..uptodate import sampled_digest

    layout = Layout.of(manifest)
    post = layout.post(name)
    rows: dict[str, dict] = {}
    for report in (read_json(post.gguf_report), read_json(post.quantize_report)):
        for file, entry in ((report or {}).get("files") or {}).items():
            kind = file[len(name) + 1:-len(".gguf")] if file.startswith(name + "-") else file
            rows[file] = {"file": file, "kind": kind, "bytes": entry.get("bytes"),
                          "digest": entry.get("digest"), "path": relative(manifest, post.folder / file)}
    out = sorted(rows.values(), key=lambda r: (r["kind"] not in ("F16", "BF16", "F32"), r["file"]))
    weights = layout.train(name).adapter / "adapter_model.safetensors"
    if weights.is_file():
        out.insert(0, {"file": weights.name, "kind": "LoRA adapter", "bytes": weights.stat().st_size,
                       "digest": sampled_digest(weights), "path": relative(manifest, weights)})
    return out


def quantization(manifest: Manifest, name: str, compare: Optional[dict]) -> Optional[dict]:
    """Per type: size, speed and perplexity (quantize report) next to score and agreement with
    the F16's replies (comparison)."""
    report = read_json(Layout.of(manifest).post(name).quantize_report)
    measured = ((report or {}).get("report") or {}).get("quants") or {}
    answered = (compare or {}).get("quantization") or {}
    kinds = list(dict.fromkeys([k for k in ("F16", "BF16", "F32") if k in measured or k in answered]
                               + list(manifest.specialists[name].quantize) + list(measured) + list(answered)))
    kinds = [k for k in kinds if k in measured or k in answered]
    if not kinds:
        return None
    rows = []
    for kind in kinds:
        m, a = measured.get(kind) or {}, answered.get(kind) or {}
        fallback = m.get("fallback") or {}
        rows.append({"kind": kind, "file": m.get("file") or a.get("file"),
                     "bytes": m.get("size_bytes") or a.get("bytes"), "size_ratio": m.get("size_ratio"),
                     "tokens_per_second": m.get("tokens_per_s"), "perplexity": m.get("perplexity"),
                     "perplexity_change": m.get("perplexity_change"),
                     "fallbacks": fallback.get("fallback_count"), "score": a.get("mean_score"),
                     "agreement": a.get("agreement_with_f16"), "questions": a.get("questions"),
                     "answer_speed": a.get("tokens_per_second")})
    size = charts.bars(charts.chart_id(name, "quant-size"), "File size per type", kinds,
                       [("MiB", [round(r["bytes"] / 2**20, 2) if r["bytes"] else None for r in rows])], "MiB")
    answers = None
    if answered:
        answers = charts.bars(charts.chart_id(name, "quant-answers"), "What each type costs in answers",
                              kinds, [("mean score", [r["score"] for r in rows]),
                                      ("same reply as F16", [r["agreement"] for r in rows])],
                              "fraction", y_range=(0, 1))
    return {"rows": rows, "size": size, "answers": answers,
            "warnings": ((report or {}).get("report") or {}).get("warnings") or []}


def usage(manifest: Manifest, name: str, asked: dict[str, dict]) -> dict:
    """How to use the model: LM Studio, Ollama and the endpoint (curl and the openai client)."""
    from ..deploy.access import key_variable
    from ..deploy.server import connect_host

    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    deployed = read_json(layout.deploy(name).report)
    host = connect_host(manifest.deploy.host)
    url = (deployed or {}).get("url") or f"http://{'[' + host + ']' if ':' in host else host}:{spec.port}/v1"
    example = "Hello! What can you help me with?"
    for q in asked.values():
        if name in q["specialists"]:
            example = q["question"]
            break
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": example}]}, ensure_ascii=False)
    key = key_variable(manifest.deploy)
    auth = bool((deployed or {}).get("auth")) or manifest.deploy.api_key_env is not None
    curl = f"curl {shlex.quote(url + '/chat/completions')} \\\n  -H 'Content-Type: application/json' \\\n"
    if auth:
        curl += f"  -H \"Authorization: Bearer ${key}\" \\\n"
    curl += f"  -d {shlex.quote(body)}"
    key_code = f'os.environ["{key}"]' if auth else '"unused"'
    python = (f"import os\n\nfrom openai import OpenAI\n\n"
              f"client = OpenAI(base_url={json.dumps(url)}, api_key={key_code})\n"
              f"reply = client.chat.completions.create(\n    model={json.dumps(name)},\n"
              f"    messages=[{{\"role\": \"user\", \"content\": {json.dumps(example, ensure_ascii=False)}}}],\n)\n"
              f"print(reply.choices[0].message.content)\n")
    lmstudio = (deployed or {}).get("lmstudio") or {}
    files = layout.deploy(name)
    modelfile = relative(manifest, (deployed or {}).get("modelfile") or files.modelfile)
    script = relative(manifest, lmstudio.get("script") or files.lmstudio_script)
    return {"deployed": deployed is not None, "url": url, "curl": curl, "python": python,
            "lmstudio": f"bash {shlex.quote(script)}", "lmstudio_model": lmstudio.get("model_path"),
            "lmstudio_preset": lmstudio.get("preset_identifier"), "modelfile": modelfile,
            "ollama": f"ollama create {name} -f {shlex.quote(modelfile)}\nollama run {name}",
            "auth": auth, "key_variable": key}
