"""Throughput estimates: the CPU figure follows the CPU's bfloat16 arithmetic, as training does."""

from __future__ import annotations

import pytest

from afs_build import estimate


@pytest.mark.parametrize("text, want", [
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n", True),
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n", False),
    ("model name\t: avx512_bf16 in a name is not a flag\n", False),
])
def test_cpu_has_bfloat16_reads_the_flags(tmp_path, text, want):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert estimate.cpu_has_bfloat16(cpuinfo) is want


def test_cpu_has_bfloat16_without_cpuinfo(tmp_path):
    assert estimate.cpu_has_bfloat16(tmp_path / "missing") is False


def test_cpu_throughput_picks_the_bfloat16_figure_only_for_auto(monkeypatch):
    monkeypatch.setattr(estimate, "cpu_has_bfloat16", lambda: True)
    assert estimate.throughput("cpu", 1, 0.135) == pytest.approx(29.0 / 0.135)
    assert estimate.throughput("cpu", 1, 0.135, base_precision="float32") == pytest.approx(20.0 / 0.135)
    assert estimate.throughput("cpu", 1, 0.135, override_1b=30.0) == pytest.approx(30.0 / 0.135)
    assert estimate.throughput("RTX4090", 1, 1.0) == 9_600.0
    monkeypatch.setattr(estimate, "cpu_has_bfloat16", lambda: False)
    assert estimate.throughput("cpu", 1, 0.135) == pytest.approx(20.0 / 0.135)
