"""Benchmark post-training: the merge, gguf and quantize tasks as the build runs them, vs the usual path.

    python bench/post_training.py            # Qwen2.5-0.5B dimensions (about 5 GB of disk)
    python bench/post_training.py --small    # a quick run on a small model
    python bench/post_training.py --repeat 2 # each path twice; the best wall time counts

Builds, in a temporary folder, a model of Qwen2.5-0.5B's dimensions with random bfloat16
weights (hidden 896, intermediate 4864, 24 layers, 14 heads, 2 kv heads, vocab 151936, tied
embeddings; the tokenizer is the tiny test one, the embedding padded past it), a random LoRA
adapter (r 16, alpha 32, all seven projections, B non-zero) and an afs project around them: a
manifest whose specialist ``bench`` has that base, that adapter where ``train:bench`` leaves
it, and a small eval split. Then, in the same run:

- afs: the task actions themselves, ``stages.merge.run``, ``stages.gguf.run`` and
  ``stages.quantize.run`` (Q8_0, Q4_K_M), each in its own process, with the durations of
  their steps read from the build's log; and ``stages.gguf.convert(manifest, "bench", "F16")``
  alone, the function ``gguf.run`` converts with (the LoRA merged into each tensor while the
  GGUF is written; no merged folder at any point), for the like-for-like figure;
- reference: peft ``merge_and_unload()`` and ``save_pretrained`` (the merged HF folder), then
  llama.cpp's own ``convert_hf_to_gguf.py`` from the llama-cpp-python sdist (F16), then
  ``llama_model_quantize`` with its default parameters to Q8_0 and Q4_K_M.

Every step runs in its own process; its wall time and peak memory (the process's max RSS,
from ``wait4``) are reported, and the two F16 files are compared tensor by tensor (they differ
by rounding only: peft merges in bfloat16, afs in float32). The afs tasks also check what the
reference does not (the merge against peft on logits, tokenizer and generation parity, a
size/speed/perplexity report per file): those steps are listed apart.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import reference  # noqa: E402  (tests/reference.py: llama.cpp's converter from the sdist)

FULL = dict(hidden=896, intermediate=4864, layers=24, heads=14, kv_heads=2, vocab=151936)
SMALL = dict(hidden=256, intermediate=768, layers=4, heads=4, kv_heads=2, vocab=32000)
PROJECTIONS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
               "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
QUANTS = ("Q8_0", "Q4_K_M")


# --- the inputs --------------------------------------------------------------------------------


def build_inputs(work: Path, dims: dict, rank: int = 16) -> tuple[Path, Path]:
    """A random bf16 Qwen2 folder and a random LoRA adapter for it."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from tinymodel import build_tiny_model

    base, adapter = work / "base", work / "adapter"
    tok = build_tiny_model(work / "tokenizer", layers=1)
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        shutil.copy(tok / name, base / name)
    shutil.rmtree(tok)
    h, ff, kv_dim = dims["hidden"], dims["intermediate"], dims["hidden"] // dims["heads"] * dims["kv_heads"]
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": ff, "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"], "num_key_value_heads": dims["kv_heads"],
        "vocab_size": dims["vocab"], "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "bos_token_id": None, "eos_token_id": 2, "pad_token_id": 0, "use_sliding_window": False,
        "sliding_window": None, "max_window_layers": dims["layers"], "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True,
    }
    (base / "config.json").write_text(json.dumps(config, indent=2))
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, std=0.02):
        return (torch.randn(*shape, generator=gen) * std).to(torch.bfloat16)

    shapes = {"q_proj": (h, h), "k_proj": (kv_dim, h), "v_proj": (kv_dim, h), "o_proj": (h, h),
              "gate_proj": (ff, h), "up_proj": (ff, h), "down_proj": (h, ff)}
    tensors = {"model.embed_tokens.weight": rand(dims["vocab"], h),
               "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    lora = {}
    for i in range(dims["layers"]):
        prefix = f"model.layers.{i}"
        tensors[f"{prefix}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        tensors[f"{prefix}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        for proj, block in PROJECTIONS.items():
            out_dim, in_dim = shapes[proj]
            tensors[f"{prefix}.{block}.{proj}.weight"] = rand(out_dim, in_dim)
            if proj in ("q_proj", "k_proj", "v_proj"):
                tensors[f"{prefix}.{block}.{proj}.bias"] = rand(out_dim)
            key = f"base_model.model.{prefix}.{block}.{proj}"
            lora[f"{key}.lora_A.weight"] = (torch.randn(rank, in_dim, generator=gen) / in_dim ** 0.5)
            lora[f"{key}.lora_B.weight"] = torch.randn(out_dim, rank, generator=gen) * 0.01
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    adapter.mkdir()
    LoraConfig(task_type="CAUSAL_LM", r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
               target_modules=sorted(PROJECTIONS), base_model_name_or_path=str(base)
               ).save_pretrained(str(adapter))
    save_file(lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    return base, adapter


EVAL = [
    [{"role": "user", "content": "What is 12 plus 30?"},
     {"role": "assistant", "content": "12 plus 30 is 42."}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Which register starts DMA on the SNES?"},
     {"role": "assistant", "content": "$420B, MDMAEN."}],
    [{"role": "user", "content": "Write add(a, b) in Python."},
     {"role": "assistant", "content": "def add(a, b):\n    return a + b"}],
]
NAME = "bench"


def make_project(work: Path, base: Path, adapter: Path) -> Path:
    """An afs project around `base`: specialist `bench`, its adapter and eval split in place."""
    import yaml

    from afs_build.manifest import load
    from afs_build.paths import Layout

    root = work / "project"
    root.mkdir()
    manifest = {
        "project": {"name": "bench"},
        "models": {"base": {"path": str(base), "params_b": 0.5}},
        "hardware": {"cpu": {"vram_gb": 8}},
        "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 3, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": {NAME: {"role": "Benchmark", "base": "base", "mix": "general",
                               "hardware": "cpu", "port": 6199, "quantize": list(QUANTS)}},
    }
    (root / "afs.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (root / "chat.jsonl").write_text("".join(
        json.dumps({"instruction": m[-2]["content"], "output": m[-1]["content"]}) + "\n" for m in EVAL))
    layout = Layout.of(load(root / "afs.yaml"))
    layout.train(NAME).folder.mkdir(parents=True)
    shutil.move(str(adapter), layout.train(NAME).adapter)  # where train:bench leaves it
    layout.mix(NAME).folder.mkdir(parents=True)
    layout.mix(NAME).eval.write_text("".join(json.dumps({"messages": m}) + "\n" for m in EVAL))
    return root / "afs.yaml"


def reference_root() -> Path:
    root = reference.llama_cpp_tree()
    if root is None:
        sys.exit("llama.cpp's reference converter is unavailable (pip download of the "
                 "llama-cpp-python sdist failed)")
    return root


# --- the steps, each run in its own process ----------------------------------------------------


def step_inputs(work: str, dims: str) -> None:
    base, adapter = build_inputs(Path(work), json.loads(dims))
    manifest = make_project(Path(work), base, adapter)
    print(json.dumps([str(base), str(manifest)]))


def step_compare(ours: str, theirs: str) -> None:
    print(json.dumps(compare(Path(ours), Path(theirs))))


def step_task(manifest: str, stage: str) -> None:
    """One task's action, exactly as doit calls it: ``<stage>.run(manifest, name)``."""
    from afs_build.manifest import load
    from afs_build.stages import gguf, merge, quantize

    failed = {"merge": merge, "gguf": gguf, "quantize": quantize}[stage].run(load(manifest), NAME)
    if failed is not None:  # the action wrapper returns doit's TaskFailed
        raise SystemExit(failed.get_msg())


def step_convert(manifest: str) -> None:
    """The conversion ``gguf.run`` does, alone: the LoRA merged into each tensor as it is written."""
    from afs_build.manifest import load
    from afs_build.stages import gguf

    gguf.convert(load(manifest), NAME, "F16")


def step_peft(base: str, adapter: str, out: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"),
                                      adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json"):
        shutil.copy(Path(base) / name, Path(out) / name)


def step_quantize(src: str, dst: str, qtype: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"quantizing {src} to {qtype} failed")


STEPS = {"inputs": step_inputs, "compare": step_compare, "task": step_task,
         "convert": step_convert, "peft": step_peft, "quantize": step_quantize}


def run(cmd: list[str]) -> dict:
    """Run `cmd`; its wall seconds, max RSS (MB, from wait4 on exactly that process), stdout.

    Linux counts the RSS a child had before exec, i.e. its parent's at fork: this parent
    imports nothing heavy (inputs and comparison run in their own processes too), so that
    floor stays at a few tens of MB.
    """
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[2:5])} failed:\n"
                             f"{err.read().decode(errors='replace')[-3000:]}")
        stdout = out.read().decode()
    return {"seconds": round(seconds, 2), "peak_mb": round(usage.ru_maxrss / 1024),
            "stdout": stdout}


def timed(cmd: list[str]) -> dict:
    figures = run(cmd)
    del figures["stdout"]
    return figures


def self_step(*args: str) -> list[str]:
    return [sys.executable, __file__, "--step", *args]


def log_steps(log_file: Path, offset: int, task: str) -> dict[str, float]:
    """The durations of `task`'s steps that the build's log recorded after `offset`."""
    steps = {}
    with open(log_file, encoding="utf-8") as handle:
        handle.seek(offset)
        for line in handle:
            event = json.loads(line)
            if event.get("task") == task and event["event"].endswith(": done"):
                steps[event["event"].removesuffix(": done")] = event["duration_s"]
    return steps


def afs_path(manifest: Path, out: Path) -> dict:
    """The three tasks' actions, then the conversion alone; F16 copied to `out` for comparing."""
    from afs_build.paths import Layout

    layout = Layout(manifest.parent / "build")
    post = layout.post(NAME)
    steps = {}
    for stage in ("merge", "gguf", "quantize"):
        offset = layout.log_file.stat().st_size if layout.log_file.exists() else 0
        figures = timed(self_step("task", str(manifest), stage))
        steps[f"{stage}:{NAME}"] = {**figures, "steps": log_steps(layout.log_file, offset,
                                                                   f"{stage}:{NAME}")}
    shutil.copy(post.gguf("F16"), out / "afs-F16.gguf")
    steps["gguf.convert (F16) alone"] = timed(self_step("convert", str(manifest)))
    for q in QUANTS:
        shutil.copy(post.gguf(q), out / f"afs-{q}.gguf")
    return steps


def reference_path(base: Path, adapter: Path, out: Path) -> dict:
    merged, f16 = out / "merged", out / "ref-F16.gguf"
    steps = {"peft merge+save": timed(self_step("peft", str(base), str(adapter), str(merged))),
             "convert_hf_to_gguf": timed(reference.command(reference_root(), merged, f16))}
    for q in QUANTS:
        steps[f"quantize {q}"] = timed(self_step("quantize", str(f16), str(out / f"ref-{q}.gguf"), q))
    shutil.rmtree(merged)
    return steps


def compare(ours: Path, theirs: Path) -> dict:
    """Same tensor names, shapes, types; the largest value difference (rounding only)."""
    import gguf
    import numpy as np

    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    same = sorted(ta) == sorted(tb) and all(
        (list(ta[n].shape), ta[n].tensor_type) == (list(tb[n].shape), tb[n].tensor_type) for n in ta)
    worst = max(float(np.abs(np.asarray(ta[n].data, np.float32) - np.asarray(tb[n].data, np.float32)).max())
                for n in ta) if same else None
    return {"same_tensors": same, "tensors": len(ta), "max_abs_diff": worst}


def total(steps: dict) -> float:
    return sum(s["seconds"] for s in steps.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a small model, for a quick run")
    parser.add_argument("--repeat", type=int, default=1, help="run each path N times, best counts")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temp folder)")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return STEPS[args.step[0]](*args.step[1:])

    dims = SMALL if args.small else FULL
    work = args.workdir or Path(tempfile.mkdtemp(prefix="afs-bench-post-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        reference_root()
        made = run(self_step("inputs", str(work), json.dumps(dims)))
        base, manifest = map(Path, json.loads(made["stdout"].strip().splitlines()[-1]))
        adapter = manifest.parent / "build" / "specialists" / NAME / "train" / "adapter"
        print(f"inputs: {dims} + LoRA r16 in {made['seconds']:.1f} s", flush=True)
        runs = {"afs": [], "reference": []}
        for i in range(args.repeat):
            for label in ("afs", "reference"):
                out = work / f"{label}-{i}"
                out.mkdir()
                steps = afs_path(manifest, out) if label == "afs" else reference_path(base, adapter, out)
                runs[label].append(steps)
                print(f"  {label} run {i + 1}: {total(steps):.1f} s", flush=True)
        agreement = json.loads(run(self_step("compare", str(work / "afs-0" / "afs-F16.gguf"),
                                             str(work / "reference-0" / "ref-F16.gguf")))["stdout"])
        sizes = {f.name: round(f.stat().st_size / 2**20) for f in sorted((work / "afs-0").glob("*.gguf"))}
        report(dims, runs, agreement, sizes)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def report(dims: dict, runs: dict, agreement: dict, sizes: dict) -> None:
    print(f"\nmodel {dims}, LoRA r16 on all 7 projections; {len(runs['afs'])} run(s) each, "
          f"best wall time; peak = max RSS of the step's process")
    best = {label: min(results, key=total) for label, results in runs.items()}
    print("\nafs (the tasks' actions, each in its own process; indented: its logged steps):")
    for step, figures in best["afs"].items():
        print(f"  {step:<44} {figures['seconds']:>7.1f} s   peak {figures['peak_mb']:>6} MB")
        for name, seconds in figures.get("steps", {}).items():
            print(f"    {name:<42} {seconds:>7.1f} s")
    print("\nreference (peft merge + save, llama.cpp's convert_hf_to_gguf.py, llama_model_quantize):")
    for step, figures in best["reference"].items():
        print(f"  {step:<44} {figures['seconds']:>7.1f} s   peak {figures['peak_mb']:>6} MB")
    ours = best["afs"]["gguf.convert (F16) alone"]
    theirs = [best["reference"][k] for k in ("peft merge+save", "convert_hf_to_gguf")]
    seconds = sum(s["seconds"] for s in theirs)
    print(f"\nto F16 (merge + convert): afs {ours['seconds']:.1f} s, peak {ours['peak_mb']} MB "
          f"(no merged folder) vs reference {seconds:.1f} s, peak "
          f"{max(s['peak_mb'] for s in theirs)} MB ({seconds / ours['seconds']:.2f}x)")
    quantize = best["afs"][f"quantize:{NAME}"]["steps"]
    print("quantize (the same llama.cpp call on both sides): afs "
          + ", ".join(f"{q} {quantize.get(f'quantizing to {q}', float('nan')):.1f} s" for q in QUANTS)
          + " (in-task steps); reference "
          + ", ".join(f"{q} {best['reference'][f'quantize {q}']['seconds']:.1f} s" for q in QUANTS)
          + " (processes)")
    print(f"F16 files: {agreement}")
    print(f"afs file sizes (MB): {sizes}")
    print(json.dumps({"dims": dims, "runs": runs, "agreement": agreement, "sizes_mb": sizes}))


if __name__ == "__main__":
    main()
