"""Have the family's models grade each other's answers, weighted by measured reliability (judge:family).

Every judge (``eval.judges``: specialists, ``eval.endpoints`` entries, or ``all``) is asked
for a verdict on other models' answers, never its own: every judge-graded answer, and
``eval.judge_questions`` rule-graded answers per model, on which its verdicts are compared
with the rule grade to measure its reliability (:mod:`afs_build.evaluation.judging`). Each
trained specialist's answers are also compared pairwise with its base's (from ``compare``), in
both orders, by the judges that answered neither. Answers that reliable judges agree are wrong
become the round's feedback. Replies come from the response cache where the same judge file
was asked the same before.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from .. import log
from ..atomic import write_json
from ..manifest import Manifest
from ..paths import Layout
from ..uptodate import SliceChanged, code_files
from .common import action, task

NAME = "judge"
CODE = ("stages/judge.py", "evaluation/judging.py", "evaluation/client.py", "evaluation/runner.py")


def judge_slice(manifest: Manifest) -> dict:
    e = manifest.eval
    return {"judges": e.judges, "judge_questions": e.judge_questions, "pairwise_questions": e.pairwise_questions,
            "judge_max_tokens": e.judge_max_tokens, "judge_grammar": e.judge_grammar, "feedback_min_judges": e.feedback_min_judges, "seed": e.seed,
            "endpoints": {j: e.endpoints[j] for j in e.judges if j in e.endpoints}}


def tasks(manifest: Manifest) -> Iterator[dict]:
    if not manifest.eval.suite or not manifest.eval.judges:
        return
    layout = Layout.of(manifest)
    files = layout.judge()
    served = [j for j in manifest.eval.judges if j in manifest.specialists]
    deps = [manifest.resolve(manifest.eval.suite)]
    deps += [layout.eval(n).results for n in manifest.specialists]
    deps += [layout.compare(s.name).base_results for s in manifest.trained]
    deps += [layout.post(j).quantize_report for j in served]
    yield task(f"{NAME}:family", "Have the models grade each other's answers, weighted by measured reliability.",
               run, manifest, "family", file_dep=deps + code_files(*CODE),
               task_dep=[f"eval:{n}" for n in manifest.specialists] + [f"compare:{s.name}" for s in manifest.trained]
               + [f"deploy:{j}" for j in served],
               targets=[files.verdicts, files.pairwise, files.report, files.feedback],
               uptodate=[SliceChanged("eval judging", judge_slice(manifest))])


def order(seed: int, qid: str) -> str:
    """A seeded, content-stable order of questions (spreads the chosen ones over categories)."""
    return hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()


def choose(rows: list[dict], by_id: dict, limit: int, seed: int) -> list[dict]:
    """Every answered judge-graded result, and the first `limit` answered rule-graded ones."""
    answered = [r for r in rows if not r.get("error") and r["question_id"] in by_id]
    judged = [r for r in answered if r["grader"] == "judge"]
    ruled = sorted((r for r in answered if r["grader"] != "judge"), key=lambda r: order(seed, r["question_id"]))
    return judged + ruled[:limit]


@action(NAME)
def run(manifest: Manifest, name: str) -> None:
    from ..data.jsonl import read_jsonl, write_jsonl
    from ..evaluation import benchmark, judging, suite
    from ..evaluation.runner import Request, ask_all, sampling
    from .evaluate import response_cache

    layout = Layout.of(manifest)
    files = layout.judge()
    e = manifest.eval
    task_name = f"{NAME}:{name}"
    questions = suite.load(manifest.resolve(e.suite), e.suite, specialists=list(manifest.specialists),
                           judges=e.judges)
    by_id = {q["id"]: q for q in questions}
    endpoints = {j: benchmark.any_endpoint(manifest, j, layout) for j in e.judges}
    items = []
    for model in manifest.specialists:
        items += choose(list(read_jsonl(layout.eval(model).results)), by_id, e.judge_questions, e.seed)
    def settings(judge: str, grammar: str) -> dict:
        constrained = e.judge_grammar and judge in manifest.specialists  # llama.cpp reads GBNF
        return {**sampling(e.judge_max_tokens), **({"grammar": grammar} if constrained else {})}

    def plain(judge: str) -> dict:
        # a retrieving specialist judges from the reference, without chunks put in the prompt
        spec = manifest.specialists.get(judge)
        return {"retrieval": False} if spec is not None and spec.retrieval is not None else {}

    requests, meta = [], []
    for item in items:
        for judge in e.judges:
            if judge != item["specialist"]:
                q = by_id[item["question_id"]]
                requests.append(Request(endpoints[judge], tuple(judging.verdict_messages(q, item["reply"])),
                                        settings(judge, judging.VERDICT_GRAMMAR), plain(judge)))
                meta.append(("verdict", judge, item))
    for pair in pairs(manifest, layout, by_id):
        for judge in e.judges:
            if judge in (pair["specialist"], pair["base_server"]):
                continue
            q = by_id[pair["question_id"]]
            for first, second in ((pair["mine"], pair["base"]), (pair["base"], pair["mine"])):
                requests.append(Request(endpoints[judge], tuple(judging.pairwise_messages(q, first, second)),
                                        settings(judge, judging.PAIRWISE_GRAMMAR), plain(judge)))
            meta += [("pair", judge, pair), ("pair2", judge, pair)]
    cache = response_cache(manifest)
    with log.step(task_name, f"asking {len(e.judges)} judges {len(requests)} verdicts") as extra, \
            log.progress(task_name, len(requests)) as advance:
        answers = ask_all(requests, cache, advance)
        extra.update(cached=cache.hits)
    verdicts, pairwise = collect(meta, answers)
    report, feedback = summarize(manifest, items, verdicts, pairwise, by_id)
    write_jsonl(files.verdicts, verdicts)
    write_jsonl(files.pairwise, pairwise)
    write_jsonl(files.feedback, feedback)
    write_json(files.report, report)
    for line in lines(report):
        log.event(line, task=task_name)


def pairs(manifest: Manifest, layout: Layout, by_id: dict) -> list[dict]:
    """For each trained specialist, its first own-category answers paired with its base's."""
    from ..data.jsonl import read_jsonl
    from ..evaluation.compare import own_categories
    from .compare import base_server

    e = manifest.eval
    limit = e.judge_questions if e.pairwise_questions is None else e.pairwise_questions
    out = []
    for spec in manifest.trained:
        path = layout.compare(spec.name).base_results
        if not limit or not path.exists():
            continue
        base = {r["question_id"]: r for r in read_jsonl(path) if not r.get("error")}
        own = own_categories(list(by_id.values()), spec.name, spec.categories)
        mine = [r for r in read_jsonl(layout.eval(spec.name).results)
                if not r.get("error") and r["question_id"] in base and r["category"] in own and r["question_id"] in by_id]
        mine.sort(key=lambda r: order(e.seed, r["question_id"]))
        server = base_server(manifest, spec)
        for r in mine[:limit]:
            out.append({"specialist": spec.name, "base_model": spec.base, "base_server": server.name if server else None,
                        "question_id": r["question_id"], "category": r["category"], "mine": r["reply"],
                        "base": base[r["question_id"]]["reply"]})
    return out


def collect(meta: list, answers: list) -> tuple[list[dict], list[dict]]:
    """Verdict rows and pairwise rows (one per judge and pair, both orders) from the replies."""
    from ..evaluation import judging

    verdicts, pairwise = [], []
    pending = None
    for (kind, judge, item), answer in zip(meta, answers):
        if kind == "verdict":
            truth = None if item["grader"] == "judge" or item["passed"] is None else bool(item["passed"])
            verdicts.append({"judge": judge, "specialist": item["specialist"], "question_id": item["question_id"],
                             "category": item["category"], "grader": item["grader"], "truth": truth,
                             "rule_score": item["score"], "verdict": None if answer.error else judging.parse_verdict(answer.reply),
                             "reply": answer.reply, "error": answer.error, "cached": answer.cached,
                             "model_digest": item.get("model_digest")})
        elif kind == "pair":
            pending = answer
        else:
            first = None if pending.error else judging.parse_winner(pending.reply)
            second = None if answer.error else judging.parse_winner(answer.reply)
            pairwise.append({"judge": judge, "specialist": item["specialist"], "base": item["base_server"] or item["base_model"],
                             "question_id": item["question_id"], "category": item["category"],
                             "first": first, "second": second, "outcome": judging.pairwise_outcome(first, second),
                             "replies": [pending.reply, answer.reply],
                             "error": pending.error or answer.error})
    return verdicts, pairwise


def summarize(manifest: Manifest, items: list[dict], verdicts: list[dict], pairwise: list[dict],
              by_id: dict) -> tuple[dict, list[dict]]:
    """judge.json (reliability, weights, alpha, weighted and pairwise scores) and the feedback."""
    from collections import defaultdict

    from ..evaluation import judging

    e = manifest.eval
    reliability = judging.reliability(verdicts)
    for judge in e.judges:
        reliability.setdefault(judge, {"verdicts": 0, "parsed": 0, "parse_rate": None, "weight": 0.0,
                                       "status": "unmeasured: it judged nothing (no other model's answers)"})
    weights = {j: r["weight"] for j, r in reliability.items()}
    by_item = defaultdict(list)
    for row in verdicts:
        by_item[(row["specialist"], row["question_id"])].append(row)
    units = [[next((r["verdict"] for r in rows if r["judge"] == j), None) for j in e.judges]
             for rows in by_item.values()]
    scores, feedback, models = [], [], defaultdict(lambda: {"judged": 0, "rule": [], "judged_rule": [], "judge_graded": {}})
    for item in items:
        rows = by_item.get((item["specialist"], item["question_id"]), [])
        score = judging.weighted(rows, weights)
        parsed = [r for r in rows if r["verdict"] is not None]
        scores.append({"specialist": item["specialist"], "question_id": item["question_id"],
                       "category": item["category"], "grader": item["grader"], "rule_score": item["score"],
                       "weighted_score": score, "verdicts": len(rows), "parsed": len(parsed),
                       "unweighted_score": round(sum(r["verdict"] == judging.CORRECT for r in parsed) / len(parsed), 4)
                       if parsed else None})
        m = models[item["specialist"]]
        m["judged"] += 1
        if item["grader"] == "judge":
            m["judge_graded"][item["question_id"]] = score
        else:
            m["rule"].append(item["score"])
            if score is not None:
                m["judged_rule"].append(score)
        passed = None if item["grader"] == "judge" else item["passed"]
        if judging.is_feedback(rows, weights, e.feedback_min_judges, passed):
            q = by_id[item["question_id"]]
            feedback.append({"specialist": item["specialist"], "question_id": q["id"], "category": q["category"],
                             "question": q["question"], "bad_answer": item["reply"], "reference": q["answer"],
                             "judges": sorted(r["judge"] for r in rows if r["verdict"] == judging.WRONG
                                              and weights.get(r["judge"], 0) > 0),
                             "model_digest": item.get("model_digest"), "run": item.get("run")})
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    by_spec = defaultdict(list)
    for row in pairwise:
        by_spec[row["specialist"]].append(row)
    report = {
        "method": "one-coin log-odds weights of each judge's balanced accuracy against the rule grade "
                  "(Laplace-smoothed); weight 0 at or below chance or when unmeasurable",
        "judges": reliability,
        "no_weight": sorted(j for j, w in weights.items() if w <= 0),
        "krippendorff_alpha": judging.krippendorff_alpha(units) if len(e.judges) > 1 else None,
        "alpha_units": sum(1 for u in units if sum(v is not None for v in u) >= 2),
        "models": {n: {"judged": m["judged"], "rule_mean": mean(m["rule"]), "weighted_mean_on_rule": mean(m["judged_rule"]),
                       "judge_graded": m["judge_graded"],
                       "judge_graded_mean": mean([s for s in m["judge_graded"].values() if s is not None])}
                   for n, m in sorted(models.items())},
        "scores": scores,
        "pairwise": {s: {"base": rows[0]["base"], **judging.pairwise_summary(rows, weights)}
                     for s, rows in sorted(by_spec.items())},
        "feedback": len(feedback),
        "settings": {"judge_questions": e.judge_questions, "pairwise_questions": e.pairwise_questions,
                     "feedback_min_judges": e.feedback_min_judges},
    }
    return report, feedback


def lines(report: dict) -> list[str]:
    """The console summary: each judge's parse rate, agreement and weight; alpha; pairwise."""
    out = []
    for judge, r in report["judges"].items():
        rate = "-" if r.get("parse_rate") is None else f"{r['parse_rate']:.0%}"
        agree = "-" if r.get("agreement") is None else f"{r['agreement']:.0%}"
        mark = "" if r["weight"] > 0 else "WARNING: "
        out.append(f"{mark}judge {judge}: parsed {rate} of {r['verdicts']} verdicts, agrees with the rule "
                   f"grade on {agree}, weight {r['weight']:.2f} ({r['status']})")
    alpha = report["krippendorff_alpha"]
    out.append(f"judges' agreement (Krippendorff's alpha): {'-' if alpha is None else f'{alpha:.2f}'} "
               f"over {report['alpha_units']} answers")
    for spec, p in report["pairwise"].items():
        out.append(f"{spec} against {p['base']} (pairwise, both orders): {p['wins']}/{p['ties']}/{p['losses']} W/T/L, "
                   f"{p['unjudged']} of {p['questions']} without a reliable consistent verdict")
    out.append(f"feedback: {report['feedback']} answers reliable judges agree are wrong")
    return out
