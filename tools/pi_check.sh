#!/usr/bin/env bash
# The device side on a Raspberry Pi's own architectures, under emulation: a Debian bookworm userland for arm64
# (64-bit Raspberry Pi OS) and for armhf (32-bit), built with debootstrap and run through qemu-user-static, gets the
# device folder installed exactly as docs/raspberry_pi.md tells a Pi owner (device_setup.sh) and runs
# `python -m device_profiler` on templates and a plan made here (fp32 and int8), plus --benchmark. Then, on this host:
# the samples are fitted by `tfwidth.latency fit` (exit 0, no warning), and every configuration's outputs computed in
# the ARM userland (--dump-outputs) equal this host's for the same inputs: fp32 within 1e-5, int8 identical.
# Timings under emulation mean nothing; the check is about installing, cutting, running and the samples' format.
#
#     bash tools/pi_check.sh                      # both architectures; PASS/FAIL per architecture, exit 1 on a FAIL
#     bash tools/pi_check.sh --arch armhf --cache /var/tmp/pi
#
# Options: --arch arm64|armhf|all (default all), --cache DIR (default ~/.cache/tfwidth-pi: the userlands, ~300 MB
# each, ~450 MB with the venv, and the host's templates; reused when present), --fresh (new templates, a new device
# folder and venv; the userlands are kept), --rebuild (new userlands too), --cpu N (the core qemu is pinned to,
# default 1: keep heavy work off a benchmark's core). Needs root (re-runs itself through sudo) for debootstrap, chroot
# and mounts, which are made in a private mount namespace and vanish with it. Host Python: $PYTHON, default
# .venv/bin/python of this checkout.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARGS=("$@")  # (for the re-run through sudo: parsing consumes them)
ARCHES=(arm64 armhf)
CACHE=${HOME}/.cache/tfwidth-pi
FRESH=0
REBUILD=0
CPU=1
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) case "$2" in all) ARCHES=(arm64 armhf) ;; arm64|armhf) ARCHES=("$2") ;;
                *) echo "error: --arch $2: choose arm64, armhf or all" >&2; exit 2 ;; esac; shift 2 ;;
        --cache) CACHE="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --rebuild) REBUILD=1; FRESH=1; shift ;;
        --cpu) CPU="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null ||
        { echo "error: pi_check needs root (debootstrap, chroot); run it as root" >&2; exit 2; }
    exec sudo --preserve-env=PYTHON,PIP_CERT,HOME bash "$0" "${ARGS[@]}"
fi
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || { echo "error: no host Python at $PY; run bash tools/quickstart.sh or set PYTHON" >&2; exit 2; }
taskset -c "$CPU" true 2>/dev/null || { echo "error: --cpu $CPU: no such core here" >&2; exit 2; }
mkdir -p "$CACHE" && CACHE=$(cd "$CACHE" && pwd)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export TF_CPP_MIN_LOG_LEVEL=2
T0=$(date +%s)
LOG=$CACHE/logs
mkdir -p "$LOG"

# step LABEL LOGNAME COMMAND...: one line per step; on failure the log's last lines
step() {
    local label=$1 name=$2; shift 2
    local t=$(date +%s)
    printf '%-60s ' "$label"
    if "$@" >"$LOG/$name.log" 2>&1; then
        echo "ok ($(( $(date +%s) - t )) s)"
    else
        echo "FAILED ($(( $(date +%s) - t )) s; $LOG/$name.log):"
        tail -n 15 "$LOG/$name.log" | sed 's/^/    /'
        return 1
    fi
}

# ---- host tools ---------------------------------------------------------------------------------------------------
host_tools() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -e /usr/bin/qemu-aarch64-static ] && [ -e /usr/bin/qemu-arm-static ] || missing+=(qemu-user-static)
    [ -e /usr/sbin/update-binfmts ] || missing+=(binfmt-support)
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; } || return 1
    fi
    # binfmt_misc runs the ARM binaries through qemu; its F flag opens the interpreter at registration, so nothing
    # needs copying into the chroot
    [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    for q in qemu-aarch64 qemu-arm; do
        [ -e /proc/sys/fs/binfmt_misc/$q ] || update-binfmts --enable $q || true
        grep -q enabled /proc/sys/fs/binfmt_misc/$q || { echo "binfmt_misc has no $q handler"; return 1; }
    done
}

# ---- the userland -------------------------------------------------------------------------------------------------
# What Raspberry Pi OS Lite (bookworm) has besides the base system: python3 with venv and pip, CA certificates.
INCLUDE=python3,python3-venv,python3-pip,ca-certificates
make_rootfs() {
    local arch=$1 r=$CACHE/rootfs-$1
    rm -rf "$r.partial"
    taskset -c "$CPU" debootstrap --arch="$arch" --variant=minbase --include=$INCLUDE bookworm "$r.partial" \
        http://deb.debian.org/debian && mv "$r.partial" "$r"
}

# Which Pi each userland stands for: the CPU qemu emulates (QEMU_CPU) and the /proc/cpuinfo that board shows.
# arm64: a Raspberry Pi 4 (Cortex-A72). qemu's default CPU, "max", also offers SVE and SME, which no Pi has; with
# them XNNPACK picks int8 kernels whose outputs under this qemu (7.2) differ from every other CPU's (up to 0.59 on
# logits of ~0.5, while a72, a76 = a Pi 5, neoverse-n1 and "max,sme=off" are bit-identical to x86): emulate the board.
# armhf: a Raspberry Pi 2 (Cortex-A7), the oldest board whose armv7l binaries (NEON, VFPv4) every later Pi runs.
declare -A QEMU_CPU=([arm64]=cortex-a72 [armhf]=cortex-a7)
# qemu-user passes the host's x86 /proc/cpuinfo through; XNNPACK's cpuinfo library, reading it beside /sys,
# segfaults (without /sys it fails, and LiteRT silently runs its built-in kernels instead of XNNPACK: not what a Pi
# runs). So the userland sees the board's own, one entry per core of this host.
fake_cpuinfo() {
    local arch=$1 n i
    n=$(nproc --all)
    for ((i = 0; i < n; i++)); do
        printf 'processor\t: %d\n' $i
        if [ "$arch" = armhf ]; then
            printf 'model name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n'
            printf 'Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm\n'
            printf 'CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xc07\n'
            printf 'CPU revision\t: 5\n\n'
        else
            printf 'BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n'
            printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
        fi
    done
    if [ "$arch" = armhf ]; then
        printf 'Hardware\t: BCM2835\nRevision\t: a01041\nModel\t\t: Raspberry Pi 2 Model B Rev 1.1'
    else
        printf 'Revision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4'
    fi
    printf ' (emulated: tools/pi_check.sh)\n'
}

# in_chroot ARCH COMMAND: run a shell command as root in the userland's device folder /root/pi, pinned to --cpu,
# with /proc (its cpuinfo a Pi's, above), /dev and /sys (read-only) mounted in a private mount namespace, gone when it
# exits. The environment is a clean one plus what reaching the package registries needs here: the host's CA bundle
# for pip when the host names one.
in_chroot() {
    local arch=$1 r=$CACHE/rootfs-$1; shift
    cp -L /etc/resolv.conf "$r/etc/resolv.conf"
    fake_cpuinfo "$arch" > "$CACHE/cpuinfo-$arch"
    local env=(PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1
               PIP_DEFAULT_TIMEOUT=180 "QEMU_CPU=${QEMU_CPU[$arch]}")
    if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
        cp "$PIP_CERT" "$r/etc/ssl/certs/pi-check-host-ca.pem"
        env+=(PIP_CERT=/etc/ssl/certs/pi-check-host-ca.pem)
    fi
    taskset -c "$CPU" unshare --mount --propagation private sh -c '
        r=$1 cpuinfo=$2; shift 2
        mount -t proc proc "$r/proc" && mount --bind "$cpuinfo" "$r/proc/cpuinfo" && mount --bind /dev "$r/dev" &&
            mount -o bind,ro /sys "$r/sys" && exec chroot "$r" /usr/bin/env -i "$@"
    ' sh "$r" "$CACHE/cpuinfo-$arch" "${env[@]}" /bin/bash -c "cd /root/pi && $*"
}

# ---- this host's side: templates, plan, inputs and the reference outputs --------------------------------------------
# The CIFAR MobileNetV1 at 32 px, 4 width levels from 0.2x to 1.0x: the real network, small enough for qemu (its
# widest variant ~1 s an invoke emulated on a busy core). Keyed by these figures and the code that writes spaces,
# templates and plans (a change makes new ones).
SPACE_ARGS="--preset mobilenet_v1_cifar --levels 4 --max-mult 1.0"
PLAN_COUNT=20
EXAMPLES=2
HOST_KEY=$( (echo "$SPACE_ARGS $PLAN_COUNT $EXAMPLES"; sed -n '/^make_host()/,/^}/p' "$0"
            cat "$ROOT"/tfwidth/{space,profile,convert}.py "$ROOT"/tfwidth/arch/*.py) |
           sha256sum | cut -c1-12)
HOST=$CACHE/host-$HOST_KEY
FORMATS=(fp32 int8)
make_host() {
    rm -rf "$CACHE"/host-* && mkdir -p "$HOST.partial" && cd "$HOST.partial" || return 1  # (older keys' too)
    taskset -c "$CPU" "$PY" -m tfwidth.space $SPACE_ARGS -o space.json &&
    taskset -c "$CPU" "$PY" -m tfwidth.profile template --space space.json -o fp32/template.tflite &&
    taskset -c "$CPU" "$PY" -m tfwidth.profile template --space space.json --quantize int8 -o int8/template.tflite &&
    taskset -c "$CPU" "$PY" -m tfwidth.profile plan --space space.json --count $PLAN_COUNT -o plan.json &&
    "$PY" -c 'import sys, numpy as np
x = np.random.default_rng(0).standard_normal((int(sys.argv[1]), 32, 32, 3)).astype(np.float32)
np.savez("inputs.npz", input0=x)' $EXAMPLES &&
    for f in "${FORMATS[@]}"; do  # with each kind of kernels, to compare like with like
        for k in default builtin; do
            taskset -c "$CPU" "$PY" -m device_profiler --template $f/template.tflite --plan plan.json \
                --kernels $k --dump-outputs inputs.npz $f/host_outputs_$k.npz || return 1
        done
    done &&
    cd "$CACHE" && mv "$HOST.partial" "$HOST"
}

# ---- one architecture ------------------------------------------------------------------------------------------------
REFERENCE=
# the kernels each runtime runs by default there: ai-edge-litert XNNPACK, the armv7l tflite-runtime its built-in ones
declare -A KERNELS=([arm64]=default [armhf]=builtin)
check_arch() {
    local arch=$1 r=$CACHE/rootfs-$1 res=$CACHE/results-$1
    [ $REBUILD = 1 ] && rm -rf "$r"
    if [ -d "$r" ]; then
        echo "[$arch] userland: reusing $r"
    else
        step "[$arch] debootstrap bookworm $arch (minbase + python3)" debootstrap-$arch make_rootfs "$arch" || return 1
    fi
    local pi=$r/root/pi
    [ $FRESH = 1 ] && rm -rf "$pi"
    # the device folder as a Pi owner copies it (the venv of an earlier run stays: device_setup.sh reuses it)
    mkdir -p "$pi" && rm -rf "$pi/device_profiler" &&
        cp -r "$ROOT/device_profiler" "$ROOT/tools/device_setup.sh" "$HOST/plan.json" "$HOST/inputs.npz" "$pi/" &&
        find "$pi/device_profiler" -name __pycache__ -prune -exec rm -rf {} + || return 1
    for f in "${FORMATS[@]}"; do
        mkdir -p "$pi/$f" && rm -f "$pi/$f"/{samples.jsonl,arm_outputs.npz} && cp "$HOST/$f"/template.* "$pi/$f/" ||
            return 1
    done
    step "[$arch] bash device_setup.sh (in the userland)" setup-$arch in_chroot "$arch" bash device_setup.sh || return 1
    grep "ready:" "$LOG/setup-$arch.log" | sed "s/^/[$arch]   /"
    local dp=".venv-device/bin/python -m device_profiler"
    for f in "${FORMATS[@]}"; do
        step "[$arch] $f: device_profiler --plan ($PLAN_COUNT configurations)" profile-$arch-$f in_chroot "$arch" \
            "$dp --template $f/template.tflite --plan plan.json --out $f/samples.jsonl --threads 1 --cpus $CPU \
             --runs 3 --warmup-runs 1 --precision 0 --noise-threshold 0 --no-progress" || return 1
        # --verbose shows LiteRT's start-up line: on arm64 XNNPACK must start (what a Pi runs, not a silent
        # fall-back to built-in kernels); the armv7l tflite-runtime wheel has no XNNPACK at all (built-in kernels)
        step "[$arch] $f: device_profiler --benchmark (the reference)" bench-$arch-$f in_chroot "$arch" \
            "$dp --template $f/template.tflite --benchmark $REFERENCE --threads 1 --cpus $CPU --runs 3 --precision 0 \
             --verbose" || return 1
        grep -v '^$' "$LOG/bench-$arch-$f.log" | tail -n 1 | sed "s/^/[$arch]   /"
        if grep -q "Created TensorFlow Lite XNNPACK delegate" "$LOG/bench-$arch-$f.log"; then kernels=default; else
            kernels=builtin; fi
        echo "[$arch]   kernels: $( [ $kernels = default ] && echo XNNPACK || echo "built-in (no XNNPACK)")"
        if [ $kernels != "${KERNELS[$arch]}" ]; then
            echo "[$arch]   FAILED: expected ${KERNELS[$arch]} kernels here ($LOG/bench-$arch-$f.log)"; return 1
        fi
        step "[$arch] $f: device_profiler --dump-outputs" dump-$arch-$f in_chroot "$arch" \
            "$dp --template $f/template.tflite --plan plan.json --dump-outputs inputs.npz $f/arm_outputs.npz" ||
            return 1
        mkdir -p "$res/$f" && cp "$pi/$f/samples.jsonl" "$pi/$f/arm_outputs.npz" "$res/$f/" || return 1
        step "[$arch] $f: tfwidth.latency fit on the host (exit 0, no warning)" fit-$arch-$f fit "$res/$f" || return 1
        step "[$arch] $f: outputs = the host's, $kernels kernels ($( [ $f = int8 ] && echo identical || echo 1e-5))" \
            compare-$arch-$f compare "$HOST/$f/host_outputs_$kernels.npz" "$res/$f/arm_outputs.npz" $f \
            "$HOST/$f/template.tflite" || return 1
        tail -n 1 "$LOG/compare-$arch-$f.log" | sed "s/^/[$arch]   /"
    done
}

fit() {  # fit DIR: the samples fitted here, as a Pi owner's are
    taskset -c "$CPU" "$PY" -m tfwidth.latency fit "$1/samples.jsonl" --space "$HOST/space.json" -o "$1/table.json" \
        2>"$1/fit.stderr" || { cat "$1/fit.stderr"; return 1; }
    cat "$1/fit.stderr"
    if grep -q "warning" "$1/fit.stderr"; then echo "the fit complained (above)"; return 1; fi
}

compare() {  # compare HOST.npz ARM.npz FORMAT TEMPLATE
    "$PY" - "$@" <<'EOF'
import sys
import numpy as np
host, arm, fmt, template = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3], sys.argv[4]
assert sorted(host.files) == sorted(arm.files), (host.files, arm.files)
assert np.array_equal(host["widths"], arm["widths"]) and np.array_equal(host["index"], arm["index"])
# int8: the int8 values the network ends on must be the same. The template dequantizes them into its float output
# (scale * (q - zero point), rounded to float32 by each CPU's own instructions: one ulp apart on armv7l), so the
# int8 values are read back through the scale of the DEQUANTIZE op's input.
quant = {}
if fmt == "int8":
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=template)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    for k, d in enumerate(it.get_output_details()):
        op = [o for o in it._get_ops_details() if d["index"] in o["outputs"]]
        if op and op[0]["op_name"] == "DEQUANTIZE":
            quant[f"output{k}"] = tensors[int(op[0]["inputs"][0])]["quantization"]
bad, worst, steps = [], 0.0, []
for k in sorted(f for f in host.files if f.startswith("output")):
    a, b = host[k], arm[k]
    assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).max(axis=1)
    worst = max(worst, float(diff.max()))
    if fmt == "fp32":  # within 1e-5 of the logits' scale (at least 1)
        off = diff > np.maximum(1.0, np.abs(a).reshape(len(a), -1).max(axis=1)) * 1e-5
    elif k in quant:
        scale, zero = quant[k]
        steps.append(scale)
        q = lambda y: np.round(y.astype(np.float64) / scale).astype(np.int64) + zero  # noqa: E731
        off = (q(a) != q(b)).reshape(len(a), -1).any(axis=1)
    else:  # an int8 output as such: the same bits
        off = diff > 0
    bad += [f"configuration {int(host['index'][c])} {k}: max |diff| {diff[c]:.3g}" for c in np.nonzero(off)[0]]
n, e = host["output0"].shape[:2]
if bad:
    print(f"{len(bad)} of {n} configurations differ: " + "; ".join(bad[:5]))
    sys.exit(1)
same = (f"the same int8 outputs (quantization step {min(steps):.3g}), " if steps else "")
print(f"{fmt}: {n} configurations x {e} inputs, {same}max |host - arm| {worst:.3g}"
      + (" (bit-identical)" if worst == 0 else ""))
EOF
}

# ---- run -------------------------------------------------------------------------------------------------------------
declare -A VERDICT
step "host: debootstrap, qemu-user-static, binfmt handlers" host-tools host_tools || exit 1
[ $FRESH = 1 ] && rm -rf "$HOST"
if [ -d "$HOST" ]; then
    echo "host: reusing templates, plan and host outputs in $HOST"
else
    step "host: space, fp32 + int8 templates, plan, host outputs" host make_host || exit 1
fi
REFERENCE=$("$PY" -c 'import json, sys; print(",".join(map(str, json.load(open(sys.argv[1]))["reference"])))' \
            "$HOST/plan.json")
for arch in "${ARCHES[@]}"; do
    t=$(date +%s)
    if (check_arch "$arch"); then VERDICT[$arch]="PASS ($(( $(date +%s) - t )) s)"; else VERDICT[$arch]="FAIL"; fi
done
echo "pi_check summary ($(( $(date +%s) - T0 )) s; logs in $LOG):"
status=0
for arch in "${ARCHES[@]}"; do
    echo "  $arch: ${VERDICT[$arch]}"
    [[ ${VERDICT[$arch]} == PASS* ]] || status=1
done
[ $status = 0 ] && echo "PASS" || echo "FAIL"
exit $status
