"""Models load without llama.cpp's AMX weight buffers where the CPU has AMX (they segfault)."""

import os
import subprocess
import sys

import pytest

from afs_build import llamacpp


def test_default_model_params_follow_the_cpu():
    llama_cpp = llamacpp.load()
    amx = "AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode()
    choice = os.environ.get(llamacpp.ENV, "").lower()
    expected = {"on": True, "off": False}.get(choice, not amx)
    assert llama_cpp.llama_model_default_params().use_extra_bufts is expected
    from llama_cpp import llama_cpp as native  # what Llama reads its defaults from

    assert native.llama_model_default_params().use_extra_bufts is expected


@pytest.mark.parametrize("choice, expected", [("off", False), ("on", True)])
def test_the_environment_decides_on_any_cpu(choice, expected):
    code = ("from afs_build.llamacpp import load; "
            "print(load().llama_model_default_params().use_extra_bufts)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, llamacpp.ENV: choice})
    assert out.stdout.strip() == str(expected)
