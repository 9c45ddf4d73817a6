"""Memory, time and cost estimates for LoRA training: rough, stated as such, and cheap.

Throughput is tokens per second for LoRA on a 1B-parameter model, scaled by model size. GPU
figures are derived, not measured: dense bf16 (fp32 where the card has no tensor cores) peak
FLOP/s x 35% utilisation / (6 x parameters) FLOPs per token. The CPU figures were measured on
the 2-core machine CI runs on (SmolLM2-135M): about 150 tokens/s in float32 (20 for 1B) and
about 210 under bfloat16 autocast (29 for 1B: 176-243 in the default build), which the
training script uses where the CPU has bfloat16 arithmetic. A hardware entry's
``tokens_per_second`` replaces the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

# The training loop's own test, so the estimate follows what the script will do; the loop
# module imports no torch at import time (it is the rendered script's body).
from .training.loop import cpu_has_bfloat16

if TYPE_CHECKING:
    from .manifest import Manifest

GIB = 2**30

# LoRA training tokens/s for a 1B-parameter model, by SkyPilot accelerator name (upper case).
THROUGHPUT_1B = {
    "CPU": 20.0, "CPU-BF16": 29.0,
    "H200": 60_000.0, "H100": 57_000.0, "A100-80GB": 18_000.0, "A100": 18_000.0,
    "L40S": 21_000.0, "L4": 7_000.0, "A10G": 7_300.0, "A10": 7_300.0, "V100": 7_300.0, "T4": 3_200.0,
    "RTX4090": 9_600.0, "RTX4080": 5_600.0, "RTX3090": 4_100.0, "RTX3080": 3_500.0,
    "RTX3070": 2_400.0, "RTX3060": 3_000.0, "RTX2080TI": 3_200.0,
    "TITANXP": 1_000.0, "GTX1080TI": 1_000.0, "GTX1080": 740.0,
}
# A card not in the table: assume an older consumer GPU rather than promise too much.
UNKNOWN_GPU_1B = 1_000.0
MULTI_GPU_EFFICIENCY = 0.9

BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "8bit": 1.1, "4bit": 0.6}
# Optimizer state, LoRA weights, activations at small batch and the runtime: 20% of the
# weights plus 1.5 GiB. Deliberately simple; the message says it is an estimate.
OVERHEAD_FRACTION = 0.2
OVERHEAD_GIB = 1.5


def weight_precision(base_precision: str, is_cpu: bool) -> str:
    """The precision the frozen base weights are held in while training."""
    if base_precision == "auto":
        return "float32" if is_cpu else "bfloat16"
    return base_precision


def lora_memory_gib(params_b: float, precision: str) -> float:
    """Estimated memory per device for LoRA training of a `params_b`-billion model."""
    weights = params_b * 1e9 * BYTES_PER_PARAM[precision] / GIB
    return weights * (1 + OVERHEAD_FRACTION) + OVERHEAD_GIB


def throughput(gpu: str, count: int, params_b: float, override_1b: float | None = None,
               base_precision: str = "auto") -> float:
    """Estimated training tokens/s on `count` of `gpu` for a `params_b`-billion model.

    A local CPU counts as bfloat16-capable when this machine is (the plan runs where it trains).
    """
    key = gpu.upper().replace(" ", "")
    if key == "CPU" and base_precision == "auto" and cpu_has_bfloat16():
        key = "CPU-BF16"
    per_1b = override_1b or THROUGHPUT_1B.get(key, UNKNOWN_GPU_1B)
    scale = count * (MULTI_GPU_EFFICIENCY if count > 1 else 1.0)
    return per_1b * scale / max(params_b, 1e-3)


@dataclass(frozen=True)
class TrainingEstimate:
    """What one specialist's training is expected to take and cost."""

    tokens: int
    tokens_source: str  # "estimate" (from the mix's size) or "data" (from the built mix)
    tokens_per_second: float
    hours: float
    price_per_hour: float

    @property
    def cost(self) -> float:
        return self.hours * self.price_per_hour


def training(tokens: int, epochs: float, tps: float, overhead_minutes: float, price: float,
             tokens_source: str = "estimate") -> TrainingEstimate:
    hours = tokens * epochs / tps / 3600 + overhead_minutes / 60
    return TrainingEstimate(tokens, tokens_source, tps, hours, price)


# Chat-template markers around a system, a user and an assistant turn (ChatML: about 15).
TEMPLATE_TOKENS = 15


def embedded_params_b(name: str) -> float:
    from .training.embedded import EMBEDDED

    return EMBEDDED[name].params_b


@dataclass(frozen=True)
class CostLine:
    specialist: str
    title: str
    hardware: str
    gpu: str
    count: int
    estimate: TrainingEstimate
    actual_hours: Optional[float] = None  # from the last training run, where there was one
    actual_cost: Optional[float] = None


def training_costs(manifest: "Manifest", hardware_override: Optional[dict[str, str]] = None) -> list[CostLine]:
    """One estimate per trained specialist; `hardware_override` maps specialist (or '*') to hardware."""
    override = hardware_override or {}
    from .paths import Layout

    layout = Layout.of(manifest)
    lines = []
    for spec in manifest.trained:
        hw = manifest.hardware[override.get(spec.name, override.get("*", spec.hardware))]
        model = manifest.models[spec.base]
        params = model.params_b or embedded_params_b(model.embedded)
        mix = manifest.mixes[spec.mix]
        tokens, where = _train_tokens(layout, spec, mix)
        tps = throughput(hw.gpu, hw.count, params, hw.tokens_per_second, spec.base_precision)
        est = training(tokens, spec.epochs, tps, hw.overhead_minutes, hw.price_per_hour, where)
        actual = _actual(layout, spec.name)
        lines.append(CostLine(spec.name, spec.title, hw.name, hw.gpu, hw.count, est,
                              *(actual if actual else (None, None))))
    return lines


def _actual(layout, name: str) -> Optional[tuple[float, float]]:
    """Hours and dollars of the last recorded training run of `name`."""
    path = layout.train(name).summary
    if not path.exists():
        return None
    try:
        afs = json.loads(path.read_text(encoding="utf-8"))["afs"]
        return afs["wall_seconds"] / 3600, afs["cost"]
    except (KeyError, ValueError, TypeError):
        return None


def _train_tokens(layout, spec, mix) -> tuple[int, str]:
    """Training tokens per epoch: from the built mix where it exists, else from its size.

    Each sample is also trained with the specialist's system prompt and the chat template's
    markers, which the mix's counts do not include.
    """
    from .data.tokens import estimate_tokens, sample_tokens

    per_sample = estimate_tokens(spec.system_prompt) + TEMPLATE_TOKENS if spec.system_prompt else TEMPLATE_TOKENS
    train = layout.mix(spec.name).train
    if train.exists():  # each sample as long as it trains: cut at max_seq_len
        try:
            with open(train, encoding="utf-8") as handle:
                return sum(min(sample_tokens(json.loads(line)) + per_sample, spec.max_seq_len)
                           for line in handle if line.strip()), "data"
        except (KeyError, ValueError, TypeError, OSError):
            pass
    if mix.tokens:
        return mix.tokens, "estimate"
    return mix.samples * (min(mix.avg_tokens, spec.max_seq_len) + per_sample), "estimate"
