"""A small build folder written by hand, shaped as the real stages write it.

The field shapes are copied from a real tiny build (ingest/score ``meta.json``, the mix's
``stats.json`` and ``rejects.jsonl``, ``training_summary.json`` and ``metrics.jsonl``,
``gguf.json``, ``quantize.json``, ``deploy.json``, eval ``results.jsonl`` and ``summary.json``,
compare ``compare.json``, ``base.jsonl``, ``quants.jsonl``, ``history.jsonl``, the family
report). Two trained specialists (alpha, beta) and one served as it is (omega); values from
the build carry hostile strings (a reply with ``<script>``), so the pages must escape them.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import yaml

HOSTILE = "<script>window.__afsPwned = 1</script><img src=x onerror=\"window.__afsPwned = 2\">"

SUITE = [
    {"id": "g1", "category": "general", "question": "What is the capital of France?", "answer": "Paris",
     "grading": "contains"},
    {"id": "g2", "category": "general", "question": "What is 12 plus 30? </script><b>bold</b>",
     "answer": "42", "grading": "exact"},
    {"id": "s1", "category": "snes", "specialists": ["alpha"], "question": "Which register starts DMA?",
     "keywords": ["420B", "MDMAEN"]},
    {"id": "s2", "category": "snes", "specialists": ["alpha"], "question": "How big is VRAM?", "keywords": ["64"]},
    {"id": "j1", "category": "snes", "specialists": ["alpha"], "question": "What mode rotates a background?",
     "answer": "Mode 7.", "grading": "judge"},
    {"id": "a1", "category": "asm", "specialists": ["beta"], "question": "What does XCE do?", "keywords": ["carry"]},
    {"id": "a2", "category": "asm", "specialists": ["beta"], "question": "What does REP do?", "keywords": ["reset"]},
]

MANIFEST = {
    "project": {"name": "demo", "description": "A demo family for the site's tests."},
    "models": {"tiny": {"embedded": "smollm2-135m-instruct"}},
    "hardware": {"cpu": {"vram_gb": 8, "price_per_hour": 0.05}},
    "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"},
                "more": {"kind": "custom", "path": "more.jsonl", "format": "alpaca"}},
    "mixes": {"general": {"samples": 16, "groups": {"expert": {"share": 0.75, "sources": ["chat"]},
                                                     "general": {"share": 0.25, "sources": ["more"]}}}},
    "specialists": {
        "alpha": {"role": "Tester " + HOSTILE, "description": "Answers <em>briefly</em> & well.", "base": "tiny",
                  "mix": "general", "hardware": "cpu", "port": 6101, "quantize": ["Q8_0", "Q4_K_M"],
                  "serve_quant": "Q8_0", "system_prompt": "You answer briefly."},
        "beta": {"role": "Second", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6102,
                 "quantize": ["Q8_0"], "system_prompt": "You are Beta.", "retrieval": {"index": "docs"}},
        "omega": {"role": "General", "base": "tiny", "train": False, "quantize": ["Q8_0"], "port": 6103},
    },
    "retrieval": {"indexes": {"docs": {"paths": ["more.jsonl"], "embedding": {"path": "tiny-bert"},
                                       "questions": "questions.jsonl"},
                              "notes": {"paths": ["chat.jsonl"], "embedding": {"path": "tiny-bert"}}}},
    "eval": {"suite": "suite.jsonl", "judges": ["omega"]},
    "site": {"title": "Demo family"},
}

ASKED = {"alpha": ["g1", "g2", "s1", "s2", "j1"], "beta": ["g1", "g2", "a1", "a2"], "omega": ["g1", "g2"]}
QUANTS = {"alpha": ["F16", "Q8_0", "Q4_K_M"], "beta": ["F16", "Q8_0"], "omega": ["F16", "Q8_0"]}
METRIC_STEPS = {"alpha": 12, "beta": 8}


def _json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")


def png(width: int = 8, height: int = 6, rgb: tuple = (200, 40, 40)) -> bytes:
    """A tiny valid PNG of one colour."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_manifest(root: Path, manifest: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "chat.jsonl").write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n"
                                             for i in range(6)), encoding="utf-8")
    (root / "more.jsonl").write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n", encoding="utf-8")
    _jsonl(root / "suite.jsonl", SUITE)
    _json(root / "tiny-bert" / "config.json", {"model_type": "bert"})  # only checked to exist here
    _jsonl(root / "questions.jsonl", [{"id": "r1", "question": "Where is hello?", "expected": [{"file": "more.jsonl"}]}])
    path = root / "afs.yaml"
    path.write_text(yaml.safe_dump(manifest or MANIFEST, sort_keys=False), encoding="utf-8")
    return path


def _score(name: str, qid: str, salt: int) -> float:
    return round(((sum(map(ord, name + qid)) + salt) % 5) / 4, 4)


def result(name: str, qid: str, reply: str | None = None, salt: int = 0) -> dict:
    q = next(q for q in SUITE if q["id"] == qid)
    score = _score(name, qid, salt)
    judge = q.get("grading") == "judge"
    return {"category": q["category"], "completion_tokens": 16,
            "grader": "judge:omega" if judge else q.get("grading", "keywords"),
            "judgements": [{"judge": "omega", "reasoning": "Score: 5 " + HOSTILE, "reliability": 1.0,
                            "score": 0.5}] if judge else [],
            "latency_s": 0.25, "model_file": f"specialists/{name}/post/{name}-Q8_0.gguf",
            "passed": score >= (0.5 if judge else 1.0), "quant": "Q8_0", "question_id": qid,
            "reply": reply if reply is not None else f"{name} answers {qid}", "run": "20261201T000000-abcdef",
            "score": score, "specialist": name, "time": "2026-12-01T00:00:00+00:00", "tokens_per_second": 64.0}


def paired(n: int, a: float, b: float) -> dict:
    return {"better": a - b > 0.2, "difference": round(a - b, 4), "high": round(a - b + 0.1, 4),
            "losses": 0, "low": round(a - b - 0.1, 4), "mean_a": a, "mean_b": b, "questions": n,
            "sign_p": 1.0, "ties": n, "wins": 0, "worse": a - b < -0.2}


def write_build(root: Path, manifest: dict | None = None) -> Path:
    """Write the manifest, its inputs and a complete fake build folder; returns the manifest."""
    path = write_manifest(root, manifest)
    build = root / "build"
    for stage in ("ingest", "score"):
        for source, kept in (("chat", 6), ("more", 1)):
            meta = {"reject_reasons": {}, "rejects": 0, "samples": kept, "source": source}
            if stage == "ingest":
                meta.update(kind="custom", records={"filtered": 0, "kept": kept, "read": kept, "rejected": 0},
                            filtered={}, settings={"format": "alpaca", "path": f"{source}.jsonl"})
            else:
                meta.update(threshold=0.5, workers=1)
            _json(build / "data" / stage / source / "meta.json", meta)
            _jsonl(build / "data" / stage / source / "rejects.jsonl", [])
    _json(build / "models/tiny/base.json", {"digest": "3c2b07f714f6e9ef" * 4, "load": str(build / "models/tiny/hf"),
                                           "model": {"name": "tiny"}, "report": {"params": 134515008}})
    for name in ("alpha", "beta"):
        _trained(build, name)
    for name in ("alpha", "beta", "omega"):
        _served(build, name)
    _index(build)
    report = build / "reports/eval/alpha"  # what the evaluation's report stage writes, where it runs
    report.mkdir(parents=True, exist_ok=True)
    (report / "report.html").write_text("<!doctype html><html><head><meta charset=utf-8><title>alpha</title>"
                                        "</head><body><h1>alpha's report</h1></body></html>\n", encoding="utf-8")
    (report / "report.md").write_text("# alpha\n\n[a link MkDocs would check](nowhere.md)\n", encoding="utf-8")
    _json(report / "report.json", {"model": "alpha"})
    (report / "categories.png").write_bytes(png())
    _json(build / "reports/family.json", {"not_better": ["beta"], "specialists": {
        n: {"verdict": v, "own": paired(2, 0.6, 0.2), "general": paired(2, 0.5, 0.5), "overall": paired(4, 0.5, 0.3),
            "version": f"{n}-v2"} for n, v in (("alpha", "better than its base"), ("beta", "not better than its base"))}})
    return path


def _index(build: Path) -> None:
    """Index docs built and measured (what index:docs and eval:index:docs write); notes not built."""
    _json(build / "index/docs/index.json", {
        "built": "2026-12-01T00:00:00+00:00", "chunks": 42, "embedded": 40, "files": 3, "index": "docs",
        "inputs": {}, "model": {"digest": "0123456789abcdef", "dims": 384, "kind": "folder", "max_tokens": 256,
                                "name": "tiny-bert"}, "reused": 2, "seconds": 1.5, "settings": "ab" * 32,
        "skip_reasons": {"binary": 1, "too large " + HOSTILE: 1}, "skipped": 2})
    overall = {"lexical": (0.5, 1.0, 1.0, 0.75), "dense": (0.0, 0.5, 1.0, 0.4), "hybrid": (0.5, 1.0, 1.0, 0.8)}
    _json(build / "index/docs/quality.json", {
        "count": 2, "index": "docs", "ks": [1, 5, 10], "questions": [], "questions_file": "questions.jsonl",
        "modes": {m: {"overall": {"recall@1": a, "recall@5": b, "recall@10": c, "mrr": d, "questions": 2},
                      "by_category": {}} for m, (a, b, c, d) in overall.items()}})


def _trained(build: Path, name: str) -> None:
    mix = build / "data/mix" / name
    _jsonl(mix / "train.jsonl", [{"id": f"{name}{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                  {"role": "assistant", "content": f"a{i}"}], "source": "chat"} for i in range(12)])
    _jsonl(mix / "eval.jsonl", [{"id": f"{name}e", "messages": [], "source": "chat"}])
    _json(mix / "stats.json", {
        "decontam": {"checked": 8, "contaminated": 1, "exact": 1, "min_overlap": 0.5, "ngram": 0, "ngram_size": 8,
                     "questions": 7, "questions_matched": 1, "suite": "suite.jsonl"},
        "dedup": {"bands": 9, "comparisons": 3, "exact": True, "exact_duplicates": 1, "kept": 6, "near": True,
                  "near_duplicates": 1, "num_perm": 128, "rows": 14, "samples": 8, "shingle": 5, "threshold": 0.85},
        "duplicate_ids": 0, "eval": {"samples": 1, "tokens": 20}, "eval_fraction": 0.1, "filtered": {"chat": {}},
        "groups": {"expert": {"available": 5, "eval": 1, "realized": 0.75, "repeated": 4, "samples": 9, "share": 0.75,
                              "sources": {"chat": {"eval": 1, "samples": 9, "tokens": 200}}, "tokens": 200, "unique": 5},
                   "general": {"available": 1, "eval": 0, "realized": 0.25, "repeated": 2, "samples": 3, "share": 0.25,
                               "sources": {"more": {"eval": 0, "samples": 3, "tokens": 61}}, "tokens": 61, "unique": 1}},
        "mix": "general", "name": f"afs.yaml: mixes.general (for specialist {name!r})",
        "records": {"chat": {"filtered": 0, "kept": 6, "read": 6, "rejected": 0}}, "rejects": {}, "scale": 0.75,
        "scores": {"counts": [0, 0, 0, 0, 1, 0, 0, 2, 3, 6], "edges": [round(i / 10, 1) for i in range(11)],
                   "unscored": 0},
        "seed": 42, "shortfall": "upsample", "sources": {"chat": {"eval": 1, "samples": 9, "tokens": 200},
                                                         "more": {"eval": 0, "samples": 3, "tokens": 61}},
        "specialist": name, "target": 16, "train": {"samples": 12, "tokens": 261}, "unit": "samples",
        "upsample_cap": 3.0, "warnings": []})
    _jsonl(mix / "rejects.jsonl", [
        {"detail": {"match": "exact", "overlap": 1.0, "question": 0}, "excerpt": "What is the capital of France?",
         "file": "chat.jsonl", "line": 1, "reason": "contaminated: matches eval question 'What is the capital of France?'",
         "source": "chat"},
        {"excerpt": "q2 " + HOSTILE, "file": "chat.jsonl", "line": 3, "reason": "duplicate: exact copy of chat.jsonl:2",
         "source": "chat"},
        {"excerpt": "q4", "file": "chat.jsonl", "line": 5, "reason": "near-duplicate: Jaccard 0.9 with chat.jsonl:4",
         "source": "chat"},
        # the shapes the real writers also write: a near-duplicate with a line but no file, a
        # skipped file with no line and no excerpt
        {"detail": {"duplicate_of": "098ac5b2", "jaccard": 0.86}, "excerpt": "q5", "line": 6,
         "reason": "near-duplicate of 098ac5b2 (jaccard ~0.86)", "source": "chat"},
        {"file": "docs/link", "reason": "symbolic link (not followed)", "source": "chat"}])
    train = build / "specialists" / name / "train"
    steps = METRIC_STEPS[name]
    _jsonl(train / "metrics.jsonl", [{"step": s, "total_steps": steps, "epoch": round(s / 4, 4), "loss": 6 - s * 0.3,
                                      "lr": 0.003, "tokens": 200, "tokens_per_second": 900.0 + s,
                                      "elapsed": s * 0.2, "eval_loss": (5.5 - s * 0.2) if s % 4 == 0 else None}
                                     for s in range(1, steps + 1)])
    _json(train / "training_summary.json", {
        "afs": {"cost": 0.0003, "estimate": {"cost": 0.0, "hours": 0.0, "tokens": 501},
                "hardware": {"backend": "local", "count": 1, "gpu": "cpu", "name": "cpu", "price_per_hour": 0.05},
                "wall_seconds": 25.3},
        "autocast": "bfloat16", "device": "cpu", "epochs": 3.0, "eval_loss": 4.7,
        "eval_losses": [{"epoch": 1.0, "loss": 5.0, "step": 4}], "hyperparameters": {"lora_r": 16, "learning_rate": 0.003},
        "manifest_digest": "6e0558fdd2e74753" * 4, "parameters": 1027072, "peak_memory_bytes": 510939136,
        "peak_memory_kind": "max_rss", "specialist": name, "steps": steps, "threads": 2, "tokens_per_second": 1122.4,
        "tokens_seen": 1326, "total_steps": steps, "train_loss": 2.5, "train_samples": 12, "train_seconds": 1.181,
        "trainable_parameters": 106496, "wall_seconds": 1.866})
    (train / "adapter").mkdir(parents=True, exist_ok=True)
    (train / "adapter" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 16)
    _json(build / "specialists" / name / "post/merge.json", {"max_abs_logit_diff": 1e-6, "tolerance": 0.001,
                                                             "tensors_changed": 14})
    compare = build / "specialists" / name / "compare"
    asked = ASKED[name]
    _jsonl(compare / "base.jsonl", [{**result("tiny", q, salt=1), "specialist": "tiny"} for q in asked])
    _jsonl(compare / "quants.jsonl", [{"category": "general", "quant": k, "question_id": "g1", "reply": "Paris",
                                       "score": 1.0} for k in QUANTS[name]])
    own = ["snes"] if name == "alpha" else ["asm"]
    _json(compare / "compare.json", {
        "base": "tiny", "base_served": "Q8_0", "base_server": "omega",
        "by_category": {c: paired(2, 0.5, 0.25) for c in sorted({next(q["category"] for q in SUITE if q["id"] == i)
                                                                  for i in asked})},
        # beta forgot what its base knew: the general interval lies below zero
        "general": paired(2, 0.5, 0.5) if name == "alpha" else paired(2, 0.25, 0.75), "general_category": "general",
        "overall": paired(len(asked), 0.5, 0.3),
        "own": paired(2, 0.75, 0.25) if name == "alpha" else paired(2, 0.25, 0.25), "own_categories": own,
        "quantization": {k: {"agreement_with_f16": 1.0 if k == "F16" else 0.5, "bytes": 1000000 // (i + 1),
                             "file": f"{name}-{k}.gguf", "mean_score": 0.5, "questions": 3,
                             "tokens_per_second": 300.0 + 100 * i} for i, k in enumerate(QUANTS[name])},
        "regression": None if name == "beta" else {"previous": "alpha-v1", "difference": 0.1, "low": -0.1,
                                                  "high": 0.3, "regressed": False},
        "seen_in_training": 0, "served": "Q8_0", "specialist": name, "unpaired": 0,
        "verdict": "better than its base" if name == "alpha" else "not better than its base",
        "version": f"{name}-v2"})
    history = [{"own_mean": 0.5, "scores": {"s1": 0.5}, "time": "2026-11-30T00:00:00+00:00", "version": f"{name}-v1"},
               {"own_mean": 0.75, "scores": {"s1": 0.75}, "time": "2026-12-01T00:00:00+00:00", "version": f"{name}-v2"}]
    _jsonl(compare / "history.jsonl", history if name == "alpha" else history[1:])


def _served(build: Path, name: str) -> None:
    post = build / "specialists" / name / "post"
    files = {f"{name}-{k}.gguf": {"bytes": 2000000 // (i + 1), "digest": f"{i}a0016efc8c04aee4fa958ab2366a70e"}
             for i, k in enumerate(QUANTS[name])}
    _json(post / "gguf.json", {"files": {f"{name}-F16.gguf": files[f"{name}-F16.gguf"]},
                               "generation": {"ok": True}, "tokenization": {"ok": True}})
    _json(post / "quantize.json", {
        "files": files, "quantize": {},
        "report": {"eval_texts": 1, "reference": "F16", "warnings": [], "quants": {
            k: {"file": f"{name}-{k}.gguf", "size_bytes": files[f"{name}-{k}.gguf"]["bytes"], "size_ratio": 1 / (i + 1),
                "tokens_per_s": 500.0 + 10 * i, "perplexity": 577.9 + i, "perplexity_change": 0.001 * i,
                "fallback": None if k == "F16" else {"fallback_count": 0}} for i, k in enumerate(QUANTS[name])}}})
    deploy = build / "specialists" / name / "deploy"
    _json(deploy / "deploy.json", {
        "auth": False, "digest": "6362d385823200d6", "gguf": str(post / f"{name}-Q8_0.gguf"),
        "lmstudio": {"model_path": f"afs/{name}/{name}-Q8_0.gguf", "preset_identifier": f"@local:afs-{name}",
                     "script": str(deploy / "lmstudio.sh")},
        "modelfile": str(deploy / "Modelfile"), "server": {"host": "127.0.0.1", "port": MANIFEST["specialists"][name]["port"]},
        "specialist": name, "url": f"http://127.0.0.1:{MANIFEST['specialists'][name]['port']}/v1"})
    evaluated = build / "specialists" / name / "eval"
    rows = [result(name, q, reply=HOSTILE if (name, q) == ("alpha", "s1") else None) for q in ASKED[name]]
    if name == "beta":  # what the evaluation writes for a request that failed: no score, an error
        rows[-1].update(score=None, passed=None, reply="", error="timed out after 3 attempts " + HOSTILE,
                        detail="", grader="keywords")
    _jsonl(evaluated / "results.jsonl", rows)
    summary = {"by_category": {}, "completion_tokens": 16 * len(rows), "failures": [], "meets_thresholds": True,
               "mean_score": round(sum(r["score"] or 0.0 for r in rows) / len(rows), 4),
               "passed": sum(1 for r in rows if r["passed"]), "questions": len(rows), "seconds": 1.0,
               "specialist": name, "thresholds": {"min_score": 0.0, "min_tokens_per_second": 0.0},
               "tokens_per_second": 64.0 + len(name)}
    for r in rows:
        block = summary["by_category"].setdefault(r["category"], {"questions": 0, "mean_score": 0.0, "passed": 0})
        block["questions"] += 1
    if name == "beta":  # a field the evaluation adds later: shown without a change to the site
        summary["latency"] = {"p50": 0.21, "p95": 0.48}
        _json(evaluated / "retrieval.json", {
            "specialist": name, "index": "docs", "top_k": 4, "train_context": False, "questions_with_context": 3,
            "own_categories": ["asm"], "general_category": "general", "unpaired": 0,
            "own": paired(2, 0.75, 0.25), "general": paired(2, 0.5, 0.5), "overall": paired(4, 0.625, 0.375),
            "by_category": {"asm": paired(2, 0.75, 0.25), "general": paired(2, 0.5, 0.5)}})
    _json(evaluated / "summary.json", summary)
    if name == "beta":  # the other shape: one folder per kind
        for kind, colour in (("baseline", (40, 160, 40)), ("actual", (40, 40, 160)), ("diff", (200, 40, 40))):
            (evaluated.parent / "screenshots" / kind).mkdir(parents=True, exist_ok=True)
            (evaluated.parent / "screenshots" / kind / "a1.png").write_bytes(png(rgb=colour))
    if name == "alpha":
        shots = evaluated.parent / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        for kind, colour in (("baseline", (40, 160, 40)), ("actual", (40, 40, 160)), ("diff", (200, 40, 40))):
            (shots / f"s1.{kind}.png").write_bytes(png(rgb=colour))


@pytest.fixture(scope="module", name="built")
def built_site(tmp_path_factory):
    """(manifest, site files) of the fake build's site, built by afs's own build function."""
    from afs_build.manifest import load
    from afs_build.paths import SiteFiles
    from afs_build.site.build import build_site

    root = tmp_path_factory.mktemp("family")
    manifest = load(write_build(root))
    build_site(manifest)
    return manifest, SiteFiles.of(manifest)
