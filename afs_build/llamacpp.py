"""llama-cpp-python, imported the one way every afs process that loads a model imports it.

Two things must be settled before llama.cpp loads a model, in each process that loads one:

- OpenMP threads that sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``, read once when ggml
  loads): spinning threads make a busy 2-core machine 100 times slower.
- No extra weight buffers where the CPU has AMX. There llama.cpp moves quantized weights into
  AMX buffers, and the first decode of a Q8_0 or Q4_K_M file then segfaults inside
  ``ggml_backend_amx_mul_mat`` (llama.cpp issue 20824, still open; measured here with
  llama-cpp-python 0.3.36 on a Xeon with AMX-INT8: every Q8_0 and Q4_K_M SmolLM2 file, while
  F16 ran). A segfault takes the whole ``doit`` with it, so on such a CPU every model is
  loaded with ``use_extra_bufts`` off (llama-server's ``--no-repack``). The same files then
  generate at 75 tokens/s on 2 threads. ``AFS_LLAMA_EXTRA_BUFFERS=on`` keeps them anyway
  and ``off`` turns them off on any CPU.

:func:`load` returns the module with both in place; it is cheap to call again.
"""

from __future__ import annotations

import os
import threading

ENV = "AFS_LLAMA_EXTRA_BUFFERS"
_guarded = False

# llama-cpp-python loads a model with stdout and stderr pointed at /dev/null (verbose=False,
# by dup2 on fds 1 and 2) and points them back after: two threads loading at once can restore
# each other's /dev/null, and the rest of the process prints nowhere. One load at a time.
LOADING = threading.Lock()


def load():
    """The ``llama_cpp`` module, ready to load models (see the module's docstring)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp

    global _guarded
    if not _guarded:
        _guarded = True
        if not extra_buffers(llama_cpp):
            _without_extra_buffers(llama_cpp)
    return llama_cpp


def extra_buffers(llama_cpp) -> bool:
    """Whether models load with llama.cpp's extra weight buffers: not where the CPU has AMX,
    unless AFS_LLAMA_EXTRA_BUFFERS says otherwise."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice in ("on", "1", "true", "yes"):
        return True
    if choice in ("off", "0", "false", "no"):
        return False
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    return "AMX_INT8 = 1" not in info


def _without_extra_buffers(llama_cpp) -> None:
    """Make llama.cpp's default model parameters say ``use_extra_bufts = False``, for
    ``Llama`` (which reads them from ``llama_cpp.llama_cpp``) and for direct callers (which
    read them from the package)."""
    from llama_cpp import llama_cpp as native

    defaults = native.llama_model_default_params

    def model_params():
        params = defaults()
        params.use_extra_bufts = False
        return params

    native.llama_model_default_params = model_params
    llama_cpp.llama_model_default_params = model_params
