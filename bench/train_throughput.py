"""Training throughput: afs's rendered training loop (packing on) against transformers' Trainer.

Both train the same LoRA (the manifest defaults: r 16 on the seven projections) on the same
short instruction samples of varied length, tokenized the same way (loss on the answers only),
one epoch each, in the same run. afs packs samples into rows of --max-seq-len and runs the
output layer on answer positions only; the baseline is a plain `Trainer` + peft run that pads
each batch to its longest sample, with about as many real tokens per batch. The figure is
tokens of real (non-padding) text per second of training. Both compute in the precision the
afs script picks on the device: bfloat16 on a CUDA GPU and on a CPU with bfloat16 arithmetic
(AVX512-BF16, AMX), float32 on other CPUs. On a GPU the report adds model FLOPs utilization:
6 x parameters x tokens/s / peak FLOPs.

    python bench/train_throughput.py [--base HF_FOLDER] [--samples 256] [--peak-tflops 989]

Default model: the tiny test model (built in a temporary folder); --base takes any Hugging Face
folder, e.g. build/models/smollm2/hf when the embedded base has been materialized.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP threads
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# Dense bfloat16 peak TFLOPs of the usual training GPUs (SXM parts; PCIe H100s are lower).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
WORDS = ("the SNES has a 65816 CPU register INIDISP starts DMA mode seven rotates and scales one "
         "background layer HDMA changes registers per scanline read the error reproduce it bisect "
         "fix add a test Paris is capital of France what is twelve plus thirty it is forty two "
         "debugging code function returns value print add sum list loop index").split()


def samples(count: int, seed: int) -> list[dict]:
    """Short instruction samples: questions of 4-30 words, answers of 3-150 (skewed short)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        question = " ".join(rng.choices(WORDS, k=rng.randint(4, 30))).capitalize() + "?"
        answer = " ".join(rng.choices(WORDS, k=min(150, 3 + int(rng.expovariate(1 / 35))))).capitalize() + "."
        out.append({"id": f"{i:020x}", "source": "bench", "provenance": {},
                    "messages": [{"role": "user", "content": question},
                                 {"role": "assistant", "content": answer}]})
    return out


def render_script(folder: Path, base: Path, args) -> Path:
    """A manifest naming `base` as a path model, loaded and rendered as the build would."""
    import yaml

    from afs_build import manifest
    from afs_build.training import script

    spec = {"role": "Benchmark", "base": "base", "mix": "bench", "hardware": "here", "port": 6100,
            "epochs": 1, "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
            "packing": True, "checkpoint_every": 1_000_000, "learning_rate": 2e-4}
    data = {"project": {"name": "bench", "seed": 0},
            "models": {"base": {"path": str(base), "params_b": 0.001}},
            "hardware": {"here": {"vram_gb": 8}},
            "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
            "mixes": {"bench": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
            "specialists": {"bench": spec}}
    (folder / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (folder / "chat.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    loaded = manifest.load(folder / "afs.yaml")
    path = folder / "train.py"
    path.write_text(script.render(script.context(loaded, "bench", base=str(base))), encoding="utf-8")
    return path


def run_trainer(module, base: Path, records: list[dict], folder: Path, batch_size: int, cuda: bool) -> dict:
    """transformers' Trainer + peft, padding each batch to its longest sample."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(base)
    items, _ = module.tokenize(tokenizer, records, module.SYSTEM_PROMPT, module.MAX_SEQ_LEN)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # the precision the afs script picks on this device (bfloat16 autocast on a GPU, and on a
    # CPU with bfloat16 arithmetic), so the two differ only in packing and the loop
    weights, amp, _ = module.precision(torch.device("cuda" if cuda else "cpu"))
    bf16 = amp == torch.bfloat16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=weights)
    model = module.add_lora(model, None)

    def collate(batch):
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    # transformers 5 takes a warmup ratio as a float warmup_steps; 4.x had warmup_ratio
    takes_ratio = "warmup_ratio" in inspect.signature(TrainingArguments.__init__).parameters
    warmup = {"warmup_ratio" if takes_ratio else "warmup_steps": module.WARMUP_RATIO}
    args = TrainingArguments(output_dir=str(folder / "trainer-out"), per_device_train_batch_size=batch_size,
                             num_train_epochs=1, learning_rate=module.LEARNING_RATE, lr_scheduler_type="cosine",
                             logging_steps=50, save_strategy="no", report_to=[], bf16=bf16, use_cpu=not cuda,
                             seed=0, disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
                             **warmup)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(items), data_collator=collate)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = sum(len(i["input_ids"]) for i in items)
    padded = sum(max(len(i["input_ids"]) for i in items[k:k + batch_size]) * len(items[k:k + batch_size])
                 for k in range(0, len(items), batch_size))  # Trainer shuffles; this is the in-order estimate
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "padding_estimate": 1 - tokens / padded, "steps": trainer.state.global_step,
            "batch_size": batch_size}


def _empty(folder: Path) -> Path:
    """An empty evaluation file: the benchmark times training only."""
    path = folder / "eval-none.jsonl"
    path.write_text("")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a Hugging Face model folder (default: the tiny test model)")
    parser.add_argument("--samples", type=int, default=256, help="training samples (one epoch each)")
    parser.add_argument("--max-seq-len", type=int, default=512, help="packed row length")
    parser.add_argument("--batch-size", type=int, default=2, help="packed rows per step (afs)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each, alternating; the best counts (a shared machine is noisy)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"the device's peak bfloat16 TFLOPs for MFU (default on GPUs: {PEAK_TFLOPS})")
    args = parser.parse_args()

    import torch

    from afs_build.training.local import run_local

    cuda = torch.cuda.is_available()  # the script picks the GPU too when there is one
    with tempfile.TemporaryDirectory(prefix="afs-bench-") as tmp:
        folder = Path(tmp)
        if args.base:
            base = Path(args.base).resolve()
        else:
            from tinymodel import build_tiny_model

            base = build_tiny_model(folder / "tiny")
        records = samples(args.samples, seed=0)
        train = folder / "train.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        path = render_script(folder, base, args)
        spec = importlib.util.spec_from_file_location("bench_train", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        afs_runs, trainer_runs = [], []
        for i in range(args.repeats):
            afs_runs.append(run_local(path, base=str(base), train=train, eval=_empty(folder),
                                      out=folder / f"afs-out-{i}", log_file=folder / "afs.log"))
            mean_len = afs_runs[0]["tokens_seen"] / afs_runs[0]["train_samples"]
            pad_batch = max(1, round(args.batch_size * args.max_seq_len / mean_len))
            torch.set_num_threads(afs_runs[0]["threads"])
            trainer_runs.append(run_trainer(module, base, records, folder, pad_batch, cuda))

    ours = max(afs_runs, key=lambda r: r["tokens_per_second"])
    theirs = max(trainer_runs, key=lambda r: r["tokens_per_second"])
    ours_tps = ours["tokens_per_second"]
    device = (ours["gpu"] or f"cpu ({ours['threads']} threads)") + f", compute {ours['autocast'] or ours['weights_dtype']}"
    print(f"model: {base} ({ours['parameters'] - ours['trainable_parameters']:,} parameters, "
          f"LoRA {ours['trainable_parameters']:,}); device: {device}")
    print(f"data: {ours['train_samples']} samples, {ours['tokens_seen']:,} tokens, {mean_len:.0f} tokens a sample")
    print(f"afs loop (packing, rows of {args.max_seq_len} x {args.batch_size}): {ours_tps:,.0f} tokens/s "
          f"({ours['steps']} steps, {ours['train_seconds']:.1f} s, peak {ours['peak_memory_bytes'] / 2**20:,.0f} MiB)")
    print(f"Trainer + peft (padding, batches of {pad_batch}): {theirs['tokens_per_second']:,.0f} tokens/s "
          f"({theirs['steps']} steps, {theirs['seconds']:.1f} s, ~{theirs['padding_estimate']:.0%} padding)")
    print(f"ratio afs / Trainer: {ours_tps / theirs['tokens_per_second']:.2f} (best of {args.repeats} each; "
          f"medians {statistics.median(r['tokens_per_second'] for r in afs_runs):,.0f} and "
          f"{statistics.median(r['tokens_per_second'] for r in trainer_runs):,.0f} tokens/s)")
    peak = args.peak_tflops or (next((v for k, v in PEAK_TFLOPS.items() if k in (ours["gpu"] or "")), None))
    if peak:
        params = ours["parameters"] - ours["trainable_parameters"]
        for name, tps in (("afs", ours_tps), ("Trainer", theirs["tokens_per_second"])):
            print(f"MFU {name}: {6 * params * tps / (peak * 1e12):.1%} (6 x {params:,} x tokens/s / {peak:g} TFLOPs)")


if __name__ == "__main__":
    main()
