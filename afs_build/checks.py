"""Cross-reference checks that run after the schema passes: names, shares, ports, fit, files.

Each check reads the defaulted manifest data and yields positioned problems; all of them run,
so the user sees every problem at once. File checks only ``stat`` (no hashing), except that a
path model's config.json is read for its architecture (a few kilobytes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from . import estimate
from .data.formats import CSN_LANGUAGES, FILE_TYPES, extension, has_type
from .training.embedded import EMBEDDED
from .errors import Problem, one_of, suggest
from .yamlload import Positions

EMBEDDED_PARAMS_B = {name: model.params_b for name, model in EMBEDDED.items()}
SHARE_TOLERANCE = 1e-6
# llama.cpp refuses these without an importance matrix (measured: quantize.py's tests).
NEEDS_IMATRIX = ("Q2_K_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS")
# The shortest answer a training sample must have room for after its prompt.
MIN_ANSWER_TOKENS = 16
# Task names a specialist's name would clash with (site:family builds the family's pages).
RESERVED_NAMES = ("family",)


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
        folder = root / Path(model["path"]).expanduser() if model["path"] else None
        if folder is not None and not folder.is_dir():
            yield pos.problem(("models", name, "path"), f"folder not found: {model['path']}; "
                              "expected a local Hugging Face model folder (config.json, weights, "
                              "tokenizer), relative to the manifest")
        elif folder is not None and not (folder / "config.json").is_file():
            yield pos.problem(("models", name, "path"), f"not a model folder: {model['path']} "
                              "has no config.json; expected a local Hugging Face model folder "
                              "(config.json, weights, tokenizer), relative to the manifest")


def check_architectures(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    """A base whose architecture afs cannot convert to GGUF: known now, not after training.

    Path models name it in config.json (read: a few kilobytes), embedded ones in the table;
    a hub model's is checked by base:<model>, or by the training script's first step.
    """
    from .training.inspection import architecture_problem, read_architecture

    for name, model in data["models"].items():
        if model.get("embedded") in EMBEDDED:
            why = architecture_problem(EMBEDDED[model["embedded"]].architecture)
            if why:
                yield pos.problem(("models", name, "embedded"), f"embedded model {model['embedded']!r}: {why}")
        elif model.get("path") and (root / Path(model["path"]).expanduser() / "config.json").is_file():
            # a folder without config.json is check_models' problem
            config = Path(model["path"]) / "config.json"
            try:
                why = architecture_problem(read_architecture(root / Path(model["path"]).expanduser()))
            except (OSError, ValueError) as err:
                why = f"unreadable ({err}); expected the model's config as a JSON object"
            if why:
                yield pos.problem(("models", name, "path"), f"{config.as_posix()}: {why}")


def params_b(model: dict) -> float | None:
    return EMBEDDED_PARAMS_B.get(model["embedded"]) if model.get("embedded") else model.get("params_b")


def check_specialists(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    for name, spec in data["specialists"].items():
        here = ("specialists", name)
        if name in RESERVED_NAMES:
            yield pos.problem(here, f"the name {name!r} is reserved (site:{name} builds the site's "
                              "family pages); expected another name")
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
                  "custom": [("path", "file")], "replay": [("path", "file")],
                  "feedback": [("path", "file")]}.get(src["kind"], [])
        for key, what in wanted:
            if src.get(key):
                yield from _exists(pos, root, here + (key,), src[key], what)
                yield from _file_type(pos, here + (key,), src["kind"], key, src[key])
        if src["kind"] == "replay" and src["model"] not in data["models"]:
            yield pos.problem(here + ("model",), _unknown("model", src["model"], data["models"]))
        if src["kind"] == "replay" and src["system_prompt_of"] is not None:
            if src["system_prompt_of"] not in data["specialists"]:
                yield pos.problem(here + ("system_prompt_of",),
                                  _unknown("specialist", src["system_prompt_of"], data["specialists"]))
            elif src["system_prompt"] is not None:
                yield pos.problem(here + ("system_prompt",), "expected either system_prompt or "
                                  "system_prompt_of, not both")
        if src["kind"] == "feedback":
            yield from _feedback_problems(data, pos, here, src)
        if src["kind"] == "codesearchnet":
            for i, path in enumerate(src["paths"]):
                yield from _exists(pos, root, here + ("paths", i), path, "file")
                yield from _file_type(pos, here + ("paths", i), "codesearchnet", "paths", path)
            for i, language in enumerate(src["languages"]):
                if language not in CSN_LANGUAGES:
                    yield pos.problem(here + ("languages", i), f"unknown CodeSearchNet language "
                                      f"{language!r}; expected one of: {one_of(CSN_LANGUAGES)}"
                                      f"{suggest(language, CSN_LANGUAGES)}")


def _feedback_problems(data: dict, pos: Positions, here: tuple, src: dict) -> Iterator[Problem]:
    """A feedback source names specialists of this manifest."""
    for i, name in enumerate(src["specialists"]):
        if name not in data["specialists"]:
            yield pos.problem(here + ("specialists", i), _unknown("specialist", name, data["specialists"]))
    if src["system_prompt_of"] is not None and src["system_prompt_of"] not in data["specialists"]:
        yield pos.problem(here + ("system_prompt_of",),
                          _unknown("specialist", src["system_prompt_of"], data["specialists"]))


def _file_type(pos: Positions, where: tuple, kind: str, key: str, rel: str) -> Iterator[Problem]:
    """A file whose extension no reader of this source kind handles (checked by name only)."""
    suffixes = FILE_TYPES.get((kind, key))
    if suffixes and not has_type(rel, suffixes):
        found = extension(rel)
        what = "a file with no extension" if found == "no extension" else f"{found} files"
        yield pos.problem(where, f"{rel}: no {kind} reader handles {what}; expected one of: "
                          f"{one_of(suffixes)} (rename the file to its format's extension, or "
                          f"convert it)")


def check_quality(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    if not any(weight > 0 for weight in data["quality"]["weights"].values()):
        yield pos.problem(("quality", "weights"), "every quality weight is 0; expected at least "
                          "one signal with a weight > 0")
    quality = data["quality"]
    if quality.get("model") is not None and quality["model"] not in data["models"]:
        yield pos.problem(("quality", "model"), _unknown("model", quality["model"], data["models"]))
    elif quality.get("model") is None and quality["weights"].get("ifd", 0) > 0:
        yield pos.problem(("quality", "weights", "ifd"), "the ifd signal needs a model: set "
                          f"quality.model to one of: {one_of(data['models'])}, or give ifd the weight 0")


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
    judges = data["eval"]["judges"]
    if isinstance(judges, str) and judges != "all":
        yield pos.problem(("eval", "judges"), f"expected a list of judge names or 'all', got {judges!r}")
    known = {**data["specialists"], **data["eval"]["endpoints"]}
    for i, judge in enumerate(judges if isinstance(judges, list) else []):
        if judge not in known:
            yield pos.problem(("eval", "judges", i), _unknown("specialist", judge, known))
    for name in data["eval"]["endpoints"]:
        if name in data["specialists"]:
            yield pos.problem(("eval", "endpoints", name), f"{name!r} is also a specialist; give the "
                              "endpoint another name")
    if data["eval"]["suite"]:
        yield from _exists(pos, root, ("eval", "suite"), data["eval"]["suite"], "file")


def check_sequence_room(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    """A trained specialist's max_seq_len holds its system prompt, the chat markers and an answer.

    Otherwise every sample is cut before its answer starts and training learns nothing; the
    token count is the fast estimate (data/tokens.py), so the bound is approximate.
    """
    from .data.tokens import estimate_tokens

    for name, spec in data["specialists"].items():
        if not spec["train"]:
            continue
        prompt = estimate_tokens(spec["system_prompt"])
        need = prompt + estimate.TEMPLATE_TOKENS + MIN_ANSWER_TOKENS
        if spec["max_seq_len"] < need:
            yield pos.problem(("specialists", name, "max_seq_len"), f"max_seq_len "
                              f"{spec['max_seq_len']} leaves no room for an answer: the system "
                              f"prompt (about {prompt} tokens) and the chat template's markers "
                              f"(about {estimate.TEMPLATE_TOKENS}) take about "
                              f"{prompt + estimate.TEMPLATE_TOKENS}; expected at least {need} "
                              f"(an answer of {MIN_ANSWER_TOKENS} tokens), or a shorter system_prompt")


HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host_problem(host: str) -> str | None:
    """Why `host` is neither an IP address nor a host name (None when it is one)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) <= 253 and all(HOST_LABEL.match(label) for label in labels) \
            and not all(label.isdigit() for label in labels):
        return None
    return (f"expected an IP address (127.0.0.1 for this machine only, 0.0.0.0 for every "
            f"interface) or a host name, got {host!r}")


def check_deploy(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    why = host_problem(data["deploy"]["host"])
    if why:
        yield pos.problem(("deploy", "host"), why)


def check_retrieval(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    """Indexes name sources of kinds that can be indexed and files that exist; specialists name
    indexes that exist."""
    from .retrieval.checks import retrieval_problems

    yield from retrieval_problems(data, pos, root)


CHECKS = (check_models, check_architectures, check_specialists, check_ports, check_mixes, check_sources,
          check_hardware_fit, check_eval, check_sequence_room, check_deploy, check_quality, check_retrieval)


def warnings(data: dict, pos: Positions) -> list[Problem]:
    """What is valid but risky (printed by ``afs validate``, not an error)."""
    from .deploy.access import is_loopback

    out = []
    deploy = data.get("deploy") or {}
    host = deploy.get("host", "127.0.0.1")
    if isinstance(host, str) and not is_loopback(host):
        variable = deploy.get("api_key_env") or "AFS_API_KEY"
        out.append(pos.problem(("deploy", "host"), f"warning: {host!r} serves the specialists "
                               f"to other machines, not only this one; every request then "
                               f"needs the API key from {variable} (set it before deploying), "
                               f"and traffic is not encrypted (HTTP)"))
    quality = data.get("quality") or {}
    if quality.get("model") and not (quality.get("weights") or {}).get("ifd", 0):
        out.append(pos.problem(("quality", "model"), "warning: quality.model is set but "
                               "quality.weights.ifd is 0, so the model scores nothing; give ifd "
                               "a weight > 0 to use it"))
    return out
