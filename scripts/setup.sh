#!/usr/bin/env bash
# Set up a fresh machine for afs: everything it needs, from the package index only.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install --disable-pip-version-check --no-input -q"
$PIP --upgrade pip
$PIP -e ".[test]"
