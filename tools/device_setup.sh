#!/usr/bin/env bash
# The device side in one command, on a Raspberry Pi (or any Linux board) with Python: run it in the folder you copied
# device_profiler/ into (with template.tflite, template.json and the plans):
#
#     bash device_setup.sh                  # creates ./.venv-device with numpy, flatbuffers and a TFLite runtime
#     .venv-device/bin/python -m device_profiler --template template.tflite --plan plan.json --out samples.jsonl ...
#
# No TensorFlow and no tfwidth: device_profiler needs numpy, flatbuffers and one TFLite runtime. Which runtime has a
# wheel on PyPI depends on the Python's architecture and version (checked with `pip download --platform ...`):
#   aarch64 (64-bit Raspberry Pi OS), CPython 3.10-3.14: ai-edge-litert (LiteRT; manylinux_2_27, glibc >= 2.27)
#   aarch64, CPython 3.8-3.9 (e.g. Pi OS bullseye):      tflite-runtime 2.14 (glibc >= 2.34) or 2.13 (older glibc)
#   armv7l (32-bit Raspberry Pi OS), CPython 3.8-3.11:   tflite-runtime 2.14 (glibc >= 2.34: bookworm) or 2.13
#   armv7l, CPython 3.12 and later, and armv6l:          none: the 64-bit OS, or a Python 3.11 (--python python3.11)
# numpy has no armv7l wheel on PyPI: on 32-bit the venv sees Debian's python3-numpy (installed with apt when
# missing, as root or through sudo), which bookworm ships at 1.24 (tflite-runtime 2.14 needs >= 1.23.2).
#
# Options: --venv DIR (default .venv-device), --python PY (default python3). Run again at any time: it reuses the
# venv and ends by printing the runtime it found. Exit code 0 when `python -m device_profiler` can run, 1 otherwise.
set -euo pipefail

VENV=.venv-device
PY=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1; use --venv DIR or --python PY" >&2; exit 2 ;;
    esac
done

say() { echo "device_setup: $*"; }
fail() { echo "device_setup: error: $*" >&2; exit 1; }

if [ ! -f device_profiler/__main__.py ]; then
    fail "no device_profiler/ here ($PWD): run this in the folder you copied device_profiler/ into"
fi
command -v "$PY" >/dev/null || fail "$PY not found; install Python 3 (sudo apt install python3 python3-venv)"

# The interpreter's architecture, not the kernel's: 32-bit Raspberry Pi OS boots a 64-bit kernel on a Pi 4/5, so
# `uname -m` says aarch64 while every wheel has to be armv7l.
probe=$("$PY" -c 'import platform, struct, sys
m = platform.machine().lower()
bits = struct.calcsize("P") * 8
arch = ("aarch64" if bits == 64 else "armv7l") if m in ("aarch64", "arm64", "armv8l", "armv7l") else m
print(arch, "%d.%d" % sys.version_info[:2])') || fail "$PY does not run as Python 3; give one with --python"
read -r ARCH PYVER <<< "$probe"
MINOR=${PYVER#3.}

as_root() {  # run a command as root: directly, or through sudo
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {  # apt_install PACKAGE WHY: install a Debian package, or say exactly what to run
    say "installing Debian's $1 with apt ($2)"
    # (stale package lists 404: update them and try once more)
    if ! { as_root apt-get install -y "$1" || { as_root apt-get update && as_root apt-get install -y "$1"; }; }; then
        fail "could not install $1 ($2): run \`sudo apt install $1\`, then this script again"
    fi
}

SYSTEM_SITE=()
case "$ARCH" in
    aarch64|x86_64|amd64)
        if [ "$MINOR" -ge 10 ]; then
            RUNTIME=(ai-edge-litert)
        elif [ "$MINOR" -ge 8 ] && [ "$ARCH" = aarch64 ]; then
            RUNTIME=(tflite-runtime)
        else
            fail "no TFLite runtime wheel for Python $PYVER on $ARCH (ai-edge-litert: 3.10-3.14; tflite-runtime on" \
                 "aarch64: 3.8-3.11); use a Python 3.10-3.14 and run again with --python python3.X"
        fi
        PACKAGES=("numpy>=1.21" "flatbuffers>=24.3" "${RUNTIME[@]}")
        ;;
    armv7l)
        if [ "$MINOR" -lt 8 ] || [ "$MINOR" -gt 11 ]; then
            fail "no tflite-runtime wheel for Python $PYVER on armv7l (PyPI has cp38-cp311 only, 2.14 for glibc >=" \
                 "2.34) and ai-edge-litert has no 32-bit ARM wheel: install the 64-bit Raspberry Pi OS" \
                 "(ai-edge-litert), or a Python 3.11 (e.g. \`uv python install 3.11\`) and run again with" \
                 "--python python3.11"
        fi
        # PyPI has no armv7l numpy: the venv sees Debian's (apt), built for this system's python3.
        if ! "$PY" -c 'import numpy' 2>/dev/null; then
            [ "$PY" = python3 ] || fail "numpy is not importable by $PY and PyPI has no armv7l numpy wheel:" \
                "install numpy for $PY first (Debian's python3-numpy serves only its python3)"
            apt_install python3-numpy "PyPI has no armv7l numpy wheel"
        fi
        SYSTEM_SITE=(--system-site-packages)
        PACKAGES=("flatbuffers>=24.3" "tflite-runtime>=2.5")
        ;;
    *)
        fail "no TFLite runtime wheel for $ARCH on PyPI; device_profiler runs on aarch64 and x86_64" \
             "(ai-edge-litert) and armv7l (tflite-runtime)"
        ;;
esac
say "Python $PYVER on $ARCH: installing ${PACKAGES[*]} into $VENV"

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install "python3-venv" "$PY -m venv needs it"
    fi
    "$PY" -m venv "${SYSTEM_SITE[@]}" "$VENV" || fail "could not create $VENV with $PY -m venv"
fi
# The venv's own pip (bookworm's 23.0) is enough: it already takes armv7l wheels for a 32-bit Python on a 64-bit
# kernel, and upgrading it costs minutes on a small board.
"$VENV/bin/python" -m pip install -q "${PACKAGES[@]}" ||
    fail "pip could not install ${PACKAGES[*]} into $VENV (its error is above; no network? behind a proxy set" \
         "PIP_CERT / PIP_INDEX_URL)"

if ! found=$("$VENV/bin/python" -c 'from device_profiler import runtime
r = runtime.select()
import numpy, flatbuffers
print(f"{r.name} {r.version}, numpy {numpy.__version__}, flatbuffers {flatbuffers.__version__}")'); then
    fail "the runtime installed into $VENV does not import (its error is above)"
fi
say "ready: $found in $VENV"
say "next: . $VENV/bin/activate; python -m device_profiler --template template.tflite --plan plan.json" \
    "--out samples.jsonl --threads 1 --cpus 3"
