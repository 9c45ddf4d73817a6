"""Who may talk to a served specialist, and what the served process may know.

A server bound beyond loopback requires an API key from the environment: ``AFS_API_KEY``, or
the variable ``deploy.api_key_env`` names (naming one requires the key on loopback too). The
served process gets an explicit environment: what Python and llama.cpp need, never the
caller's secrets (``HF_TOKEN``, ``OPENAI_API_KEY``, anything secret-named); its one secret is
the key, under ``AFS_API_KEY``, when it has one.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

from ..errors import StageError
from ..manifest import Deploy, Manifest

KEY_VARIABLE = "AFS_API_KEY"  # the default variable; also the name the server reads it from
MIN_KEY_LENGTH = 16
# The served process's environment: these names and prefixes, minus anything secret-named.
PASSED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH",
          "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH",
          "SYSTEMROOT")
PASSED_PREFIXES = ("LC_", "OMP_", "KMP_", "GGML_", "LLAMA_", "CUDA_", "HIP_", "ROCR_", "MKL_",
                   "OPENBLAS_", "MALLOC_")


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def key_variable(deploy: Deploy) -> str:
    """The environment variable the API key is read from."""
    return deploy.api_key_env or KEY_VARIABLE


def api_key(manifest: Manifest) -> Optional[str]:
    """The key the servers require, or None (loopback, and no ``deploy.api_key_env``).

    Beyond loopback a key is required: StageError when its variable is unset or too short.
    """
    deploy = manifest.deploy
    if is_loopback(deploy.host) and deploy.api_key_env is None:
        return None
    name = key_variable(deploy)
    value = os.environ.get(name, "")
    why = (f"deploy.host is {deploy.host!r}, reachable from other machines"
           if not is_loopback(deploy.host) else f"deploy.api_key_env names {name}")
    if not value:
        raise StageError(f"{manifest.file}: {why}, so the servers require an API key; set "
                         f"{name} in the environment (clients send it as their API key)")
    if len(value) < MIN_KEY_LENGTH:
        raise StageError(f"{manifest.file}: the API key in {name} has {len(value)} characters; "
                         f"expected at least {MIN_KEY_LENGTH} (for example: python -c 'import "
                         f"secrets; print(secrets.token_urlsafe(24))')")
    return value


def client_key(deploy: Deploy) -> Optional[str]:
    """The key a client on this machine sends (health checks, status): the variable's value."""
    return os.environ.get(key_variable(deploy)) or None


def served_env(key: Optional[str] = None, source: Optional[dict] = None) -> dict[str, str]:
    """The explicit environment of a served process: no secret it does not need."""
    from ..log import SECRET_NAME

    source = os.environ if source is None else source
    env = {k: v for k, v in source.items()
           if (k in PASSED or k.startswith(PASSED_PREFIXES)) and not SECRET_NAME.search(k)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # ggml's idle threads spin otherwise
    # glibc gives each thread that allocates its own arena and keeps what they freed: a
    # server that tokenized a few large prompts in worker threads would keep that memory.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env["PYTHONUNBUFFERED"] = "1"
    if key:
        env[KEY_VARIABLE] = key
    return env
