"""Cross-reference checks that run after the schema passes: names, shares, ports, fit, files.

Each check reads the defaulted manifest data and yields positioned problems; all of them run,
so the user sees every problem at once. File checks only ``stat`` (no reading, no hashing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import estimate
from .training.base import EMBEDDED
from .errors import Problem, one_of, suggest
from .yamlload import Positions

EMBEDDED_PARAMS_B = {name: model.params_b for name, model in EMBEDDED.items()}
SHARE_TOLERANCE = 1e-6
# llama.cpp refuses these without an importance matrix (measured: quantize.py's tests).
NEEDS_IMATRIX = ("Q2_K_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS")


def cross_problems(data: dict, positions: Positions, root: Path, *, tolerant: bool = False) -> list[Problem]:
    """Every cross-reference problem of defaulted manifest data.

    With `tolerant` (the schema already found problems), a check that meets data of the
    wrong shape is skipped: the schema problem is the one to fix first.
    """
    problems: list[Problem] = []
    for check in CHECKS:
        try:
            problems.extend(check(data, positions, root))
        except (TypeError, KeyError, AttributeError, ValueError):
            if not tolerant:
                raise
    return problems


def _unknown(kind: str, name: Any, known: dict) -> str:
    if not known:
        return f"unknown {kind} {name!r}; no {kind}s are defined: add one under the {kind_section(kind)} section"
    return f"unknown {kind} {name!r}; expected one of: {one_of(known)}{suggest(name, known)}"


def kind_section(kind: str) -> str:
    return {"model": "models", "hardware": "hardware", "source": "sources", "mix": "mixes",
            "specialist": "specialists"}[kind]


def check_models(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, model in data["models"].items():
        given = [k for k in ("hub", "path", "embedded") if model.get(k)]
        if len(given) != 1:
            got = "none of them" if not given else " and ".join(repr(k) for k in given)
            yield pos.problem(("models", name), f"expected exactly one of 'hub', 'path' or "
                              f"'embedded'; got {got}")
            continue
        if given[0] != "embedded" and model["params_b"] is None:
            yield pos.problem(("models", name, "params_b"), "missing required key 'params_b'; "
                              "expected the parameter count in billions (e.g. 7.6) for a hub or "
                              "path model, used for memory and time estimates")
        if model["path"] and not (root / Path(model["path"]).expanduser()).is_dir():
            yield pos.problem(("models", name, "path"), f"folder not found: {model['path']}; "
                              "expected a local Hugging Face model folder (config.json, weights, "
                              "tokenizer), relative to the manifest")


def params_b(model: dict) -> float | None:
    return EMBEDDED_PARAMS_B.get(model["embedded"]) if model.get("embedded") else model.get("params_b")


def check_specialists(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, spec in data["specialists"].items():
        here = ("specialists", name)
        if spec["base"] not in data["models"]:
            yield pos.problem(here + ("base",), _unknown("model", spec["base"], data["models"]))
        for key, section, kind in (("mix", "mixes", "mix"), ("hardware", "hardware", "hardware")):
            value = spec[key]
            if value is None:
                if spec["train"]:
                    yield pos.problem(here + (key,), f"missing required key {key!r}; expected the "
                                      f"name of a {kind} in {section} (required when train is true)")
            elif value not in data[section]:
                yield pos.problem(here + (key,), _unknown(kind, value, data[section]))
        if spec["serve_quant"] is not None and spec["serve_quant"] not in spec["quantize"]:
            yield pos.problem(here + ("serve_quant",), f"{spec['serve_quant']!r} is not among "
                              f"this specialist's quantize types; expected one of: "
                              f"{one_of(spec['quantize'])}{suggest(spec['serve_quant'], spec['quantize'])}")
        for i, qtype in enumerate(spec["quantize"]):
            if qtype in NEEDS_IMATRIX:
                yield pos.problem(here + ("quantize", i), f"{qtype} needs an importance matrix, "
                                  "which afs does not compute; expected another type (IQ3_S, "
                                  "IQ4_XS, Q2_K or any Q*_K_* type)")
        if not spec["quantize"]:
            yield pos.problem(here + ("quantize",), "expected at least one quantization type to "
                              "serve (for example Q8_0)")


def check_ports(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    seen: dict[int, str] = {}
    for name, spec in data["specialists"].items():
        port = spec["port"]
        if port in seen:
            first = pos.of(("specialists", seen[port], "port"))[0]
            yield pos.problem(("specialists", name, "port"), f"port {port} is already used by "
                              f"{seen[port]!r} (line {first}); expected a unique port per specialist")
        else:
            seen[port] = name


def check_mixes(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, mix in data["mixes"].items():
        here = ("mixes", name)
        total = sum(g["share"] for g in mix["groups"].values())
        if abs(total - 1.0) > SHARE_TOLERANCE:
            parts = " + ".join(f"{g} {v['share']:g}" for g, v in mix["groups"].items())
            yield pos.problem(here + ("groups",), f"shares add up to {total:.4g} ({parts}); "
                              "expected them to add up to 1")
        if (mix["samples"] is None) == (mix["tokens"] is None):
            got = "both" if mix["samples"] is not None else "neither"
            yield pos.problem(here, f"expected exactly one of 'samples' or 'tokens' (the size of "
                              f"the training split); got {got}")
        for group, body in mix["groups"].items():
            for i, source in enumerate(body["sources"]):
                if source not in data["sources"]:
                    yield pos.problem(here + ("groups", group, "sources", i),
                                      _unknown("source", source, data["sources"]))


def check_sources(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, src in data["sources"].items():
        here = ("sources", name)
        if src["kind"] == "custom" and bool(src.get("path")) == bool(src.get("hub")):
            got = "both" if src.get("path") else "neither"
            yield pos.problem(here, f"expected exactly one of 'path' or 'hub' for a custom "
                              f"source; got {got}")
        wanted = {"toolbench": [("path", "file")], "codebase": [("path", "folder")],
                  "synthetic": [("facts", "file"), ("templates", "file")],
                  "custom": [("path", "file")]}.get(src["kind"], [])
        for key, what in wanted:
            if src.get(key):
                yield from _exists(pos, root, here + (key,), src[key], what)
        if src["kind"] == "codesearchnet":
            for i, path in enumerate(src["paths"]):
                yield from _exists(pos, root, here + ("paths", i), path, "file")


def _exists(pos: Positions, root: Path, where: tuple, rel: str, what: str) -> Iterator[Problem]:
    path = root / Path(rel).expanduser()
    ok = path.is_dir() if what == "folder" else path.is_file()
    if not ok:
        yield pos.problem(where, f"{what} not found: {rel} (looked in {path.parent}); expected an "
                          f"existing {what}, relative to the manifest's folder")


def check_hardware_fit(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, spec in data["specialists"].items():
        hw = data["hardware"].get(spec["hardware"] or "")
        model = data["models"].get(spec["base"])
        if not spec["train"] or hw is None or model is None or params_b(model) is None:
            continue
        size = params_b(model)
        is_cpu = hw["gpu"].lower() == "cpu"
        precision = estimate.weight_precision(spec["base_precision"], is_cpu)
        if is_cpu and precision in ("8bit", "4bit"):
            yield pos.problem(("specialists", name, "base_precision"), f"{precision} base weights "
                              "need a CUDA GPU (bitsandbytes); expected auto, float32 or bfloat16 "
                              f"on hardware {spec['hardware']!r} (gpu: cpu)")
            continue
        need = estimate.lora_memory_gib(size, precision)
        if need > hw["vram_gb"]:
            hint = ""
            if not is_cpu and precision not in ("4bit",):
                hint = (f", or base_precision: 4bit (QLoRA, about "
                        f"{estimate.lora_memory_gib(size, '4bit'):.1f} GiB)")
            unit = "GiB of RAM" if is_cpu else "GiB per GPU"
            yield pos.problem(("specialists", name, "hardware"), f"{spec['hardware']!r} has "
                              f"{hw['vram_gb']:g} {unit} but LoRA "
                              f"on {spec['base']!r} ({size:g}B parameters, {precision} weights) needs "
                              f"about {need:.1f} GiB (estimate); expected hardware with more memory{hint}")


def check_eval(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for i, judge in enumerate(data["eval"]["judges"]):
        if judge not in data["specialists"]:
            yield pos.problem(("eval", "judges", i), _unknown("specialist", judge, data["specialists"]))
    if data["eval"]["suite"]:
        yield from _exists(pos, root, ("eval", "suite"), data["eval"]["suite"], "file")


def check_retrieval(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    """Indexes name sources of kinds that can be indexed and files that exist; specialists name
    indexes that exist."""
    from .retrieval.checks import retrieval_problems

    yield from retrieval_problems(data, pos, root)


CHECKS = (check_models, check_specialists, check_ports, check_mixes, check_sources,
          check_hardware_fit, check_eval, check_retrieval)
