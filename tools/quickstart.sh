#!/usr/bin/env bash
# Install tfwidth into .venv (created on first use) and run the whole pipeline on the offline default:
# scikit-learn's digits, the CIFAR-sized MobileNetV1 space, this machine's CPU profiled as the device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/tfwidth pipeline "$@"
