#!/usr/bin/env bash
# Install what the tests need into .venv (created on first use) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The report's test renders it in a browser: Debian's chromium, installed once (apt, as root or through sudo)
if ! command -v chromium >/dev/null; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi
# ... so here a missing browser fails that test instead of skipping it
export TFWIDTH_REQUIRE_BROWSER=1
exec .venv/bin/python -m pytest -q "$@"
