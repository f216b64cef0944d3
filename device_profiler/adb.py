"""Time variants on an Android phone over adb with TFLite's ``benchmark_model`` binary.

A phone usually has no Python, so the variants are cut out of the template here, on the host, with the same
flatbuffer code the device runner uses (device_profiler.variants), pushed one at a time, timed by the stock
``benchmark_model`` and removed again. Its output is parsed into the same sample lines as the local runner's.

    python -m device_profiler --runner adb --template template.tflite --plan plan.json --out samples.jsonl \\
        --benchmark-binary /data/local/tmp/benchmark_model [--serial S] [--threads 1] [--cpus 4-7] [--use-gpu]

Pieces, usable alone: ``parse_benchmark_output`` (text -> timings, tolerant of the formats of TF 1.x to LiteRT and
of logcat prefixes), ``Adb`` (one device, chosen like adb does, errors the user can act on), ``benchmark_command``
and ``AdbBenchmark.time`` (one variant -> one sample's timing fields or a failure message).

Only the standard library here: this module runs on the host, next to the variant maker, never on the phone.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from device_profiler.errors import UsageError

RUNTIME = "benchmark_model"
DEFAULT_REMOTE_DIR = "/data/local/tmp"
# benchmark_model writes to stderr on some builds and stdout on others; the exit status of `adb shell` is only
# forwarded by adb >= 1.0.36 talking to Android >= 7, so the command echoes its own status behind this marker.
_RC_MARKER = "__tfwidth_rc="
# What adb itself says when the device is gone (not benchmark_model's errors).
_LOST = re.compile(r"device '?[^ ']*'? not found|no devices/emulators found|device offline|device unauthorized|"
                   r"error: closed|no devices found")


# ---- benchmark_model output ---------------------------------------------------------------------------------------
class BenchmarkFailed(Exception):
    """benchmark_model ran but produced no timings; the message is the most telling line(s) of its output."""


@dataclass
class RunStats:
    """One `count=... first=... min=...` line of benchmark_model (microseconds)."""
    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    median: float | None = None  # printed by builds whose Stat keeps percentiles (p5/median/p95); else None
    p5: float | None = None
    p95: float | None = None

    def ms(self) -> dict:
        """The samples-file statistics in milliseconds (median None when this build does not print it)."""
        def m(v):
            return None if v is None else v / 1000.0
        return {"min": m(self.min), "median": m(self.median), "mean": m(self.avg), "std": m(self.std),
                "count": self.count, "max": m(self.max), "first": m(self.first)}


@dataclass
class BenchmarkOutput:
    warmup: RunStats
    inference: RunStats
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    delegate: str | None = None  # the "Explicitly applied X delegate, ..." / "Replacing N out of M" line, if any
    notes: list = field(default_factory=list)


# A log prefix before the message: "INFO: ", "I tflite  : ", or a logcat line "05-30 15:16:45.362  3380  3380 I tflite  : ".
_PREFIX = re.compile(r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+)?(?:[VDIWEF] [\w.-]+\s*:\s?|INFO:\s|WARNING:\s)?")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_KV = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)=({_NUM})")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_SUMMARY = re.compile(r"(?:Average )?[Ii]nference timings in us: (.*)$")
_SUMMARY_KV = re.compile(rf"([A-Za-z][A-Za-z ()]*?): ({_NUM})")
_DELEGATE = re.compile(r"(Explicitly applied \w+ delegate.*|Though \w+ delegate is explicitly applied.*|"
                       r"Replacing \d+ out of \d+ node\(s\) with delegate.*)$")
_FAILURE = re.compile(r"(ERROR|Error|error|Failed|failed|FAILED|fault|Abort|abort|not found|No such file|"
                      r"CANNOT LINK|Permission denied|inaccessible|not executable|Unknown|unrecognized)")
_BENIGN = re.compile(r"^(Log parameter values|Min num runs|Graph:|Num threads|Use |#threads|Enable op profiling|"
                     r"Note: as the benchmark tool)")


def _strip(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n").rstrip("\r"), count=1).strip()


def _stats(msg: str) -> RunStats | None:
    kv = {k: float(v) for k, v in _KV.findall(msg)}
    if "count" not in kv or not msg.lstrip().startswith("count="):
        return None
    st = RunStats(count=int(kv.pop("count")), **kv)
    if st.count > 0 and st.min is None and st.curr is not None:
        # "count=N curr=X" or "curr=X(all same)": every run took X microseconds.
        st.first = st.first if st.first is not None else st.curr
        st.min = st.max = st.avg = st.curr
        st.std = 0.0
        if st.median is None:
            st.median = st.curr
    return st


def failure_message(text: str, limit: int = 300) -> str:
    """The line(s) of a failed run that say why, joined on one line (what a failed sample records)."""
    lines = [_strip(l) for l in text.splitlines()]
    lines = [l for l in lines if l and not l.startswith(_RC_MARKER)]
    bad = [l for l in lines if _FAILURE.search(l) and not _BENIGN.match(l)]
    picked = []
    for l in (bad or lines[-2:]):
        if l not in picked:
            picked.append(l)
    msg = " | ".join(picked[-4:]) or "benchmark_model printed nothing"
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse one benchmark_model run; raise BenchmarkFailed (with the telling lines) when it produced no timings.

    Handles the plain tool output (TF 1.x "Average inference timings in us: Warmup: ..., Init: ..., no stats: ...",
    TF 2.x "Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ..."),
    "INFO: " prefixes, logcat lines, the short "count=1 curr=X" / "(all same)" forms, percentiles when printed, and
    numbers in e-notation ("avg=2.95034e+06"). The op-profiling tables that may follow are ignored. Per-run
    timings are not printed by any stock build (BenchmarkModel::Run logs only the aggregate Stat), so none are kept.
    """
    lines = [_strip(l) for l in text.splitlines()]
    stats: list[RunStats] = []
    expect_stats = False
    out = {"delegate": None, "summary": {}}
    failed_line = None
    for msg in lines:
        if _RUNNING.search(msg):
            expect_stats = True
            continue
        if expect_stats and msg.startswith("count="):
            st = _stats(msg)
            if st is not None:
                stats.append(st)
            expect_stats = False
            continue
        m = _SUMMARY.search(msg)
        if m:
            out["summary"] = {k.strip(): float(v) for k, v in _SUMMARY_KV.findall(m.group(1))}
            continue
        m = _DELEGATE.search(msg)
        if m and out["delegate"] is None:
            out["delegate"] = m.group(1)
        if msg.startswith("Benchmarking failed"):
            failed_line = msg
    if failed_line is not None or not stats:
        raise BenchmarkFailed(failure_message(text))
    if len(stats) < 2:
        raise BenchmarkFailed(f"benchmark_model stopped after its warm-up ({failure_message(text)})")
    # Each "Running benchmark for at least" announces one phase: warm-up first, then the timed runs.
    warmup, inference = stats[0], stats[1]
    if inference.count == 0 or inference.min is None:
        raise BenchmarkFailed(f"benchmark_model timed no run ({failure_message(text)})")
    for v in (inference.min, inference.avg):
        if v is None or not math.isfinite(v) or v <= 0:
            raise BenchmarkFailed(f"benchmark_model reported a non-positive or non-finite time: {v}")
    s = out["summary"]
    inference_avg = s.get("Inference (avg)", s.get("Inference", s.get("no stats")))
    return BenchmarkOutput(
        warmup=warmup, inference=inference, init_us=s.get("Init"),
        first_inference_us=s.get("First inference", warmup.first),
        warmup_avg_us=s.get("Warmup (avg)", s.get("Warmup")), inference_avg_us=inference_avg,
        delegate=out["delegate"])


# ---- taskset ------------------------------------------------------------------------------------------------------
def parse_cpus(spec: str | None) -> list[int] | None:
    """'4-7' / '0,2,4-5' -> sorted core ids (None for None); what --cpus means for taskset on the phone."""
    if spec is None or str(spec).strip() == "":
        return None
    cores = set()
    try:
        for part in str(spec).split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if a > b:
                    raise ValueError(part)
                cores.update(range(a, b + 1))
            else:
                cores.add(int(part))
    except ValueError:
        raise UsageError(f"--cpus {spec!r} is not a list of CPU cores; write e.g. 4-7 (the big cores of many "
                         f"phones) or 0,2,4-5") from None
    if not cores or min(cores) < 0 or max(cores) > 63:
        raise UsageError(f"--cpus {spec!r} names cores outside 0-63; list the phone's cores, e.g. 4-7")
    return sorted(cores)


def cpu_mask(cores: list[int]) -> str:
    """Core ids -> the hex affinity mask toybox `taskset` takes ('f0' for 4-7)."""
    return format(sum(1 << c for c in cores), "x")


# ---- adb ----------------------------------------------------------------------------------------------------------
def locate_adb() -> str:
    path = shutil.which("adb")
    if path is None:
        raise UsageError("adb is not on PATH; install Android SDK platform-tools (e.g. `sudo apt install adb`, or "
                         "the platform-tools zip from developer.android.com) and add its folder to PATH")
    return path


class Adb:
    """One attached device. ``Adb(serial)`` picks the device the way the user expects and says what to do if not."""

    def __init__(self, serial: str | None = None, adb: str | None = None, timeout: float = 120.0):
        self.adb = adb or locate_adb()
        self.timeout = timeout
        self.serial = self._select(serial)

    def _call(self, args: list, timeout: float | None = None, serial: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.adb] + (["-s", self.serial] if serial else []) + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise UsageError(f"cannot run {self.adb}; install Android SDK platform-tools and put adb on PATH") from None
        except subprocess.TimeoutExpired:
            raise UsageError(f"`adb {' '.join(map(str, args))[:80]}` did not answer in {timeout or self.timeout:.0f} s; "
                             f"check the USB cable and that `adb devices` lists the phone as 'device'") from None
        if p.returncode != 0 and serial and _LOST.search((p.stderr or "") + (p.stdout or "")):
            # The phone went away mid-run: stop (resumable) rather than record every remaining sample as failed.
            raise UsageError(f"lost device {self.serial} ({_LOST.search(p.stderr + p.stdout).group(0)}); reconnect "
                             f"it and run the same command again to resume")
        return p

    def devices(self) -> list[tuple[str, str]]:
        p = self._call(["devices"], serial=False)
        if p.returncode != 0:
            raise UsageError(f"`adb devices` failed ({(p.stderr or p.stdout).strip()[:200]}); restart the server "
                             f"with `adb kill-server` and plug the phone in again")
        out = []
        for line in p.stdout.splitlines():
            line = line.strip()
            if not line or line.startswith(("List of devices", "*")):
                continue
            parts = line.split(None, 1)
            if len(parts) == 2:
                out.append((parts[0], parts[1].split()[0] if parts[1].split() else parts[1]))
        return out

    def _select(self, serial: str | None) -> str:
        self.serial = None
        devs = self.devices()
        hint = {"unauthorized": "unlock the phone and accept the 'Allow USB debugging' prompt",
                "offline": "reconnect the cable (or `adb reconnect`) and wait for it to come online",
                "no": "fix the udev permissions for the phone (see `adb devices` help) or run adb as your user"}
        if serial is not None:
            state = dict(devs).get(serial)
            if state is None:
                listed = ", ".join(s for s, _ in devs) or "none"
                raise UsageError(f"device {serial} is not attached (adb devices lists: {listed}); pass one of "
                                 f"those to --serial")
            if state != "device":
                raise UsageError(f"device {serial} is {state}; {hint.get(state, 'check it with `adb devices`')}")
            return serial
        ready = [s for s, st in devs if st == "device"]
        if len(ready) == 1:
            return ready[0]
        if len(ready) > 1:
            raise UsageError(f"{len(ready)} devices are attached ({', '.join(ready)}); choose one with --serial")
        if devs:
            s, st = devs[0]
            raise UsageError(f"no usable device: {s} is {st}; {hint.get(st, 'check it with `adb devices`')}")
        raise UsageError("no Android device attached (`adb devices` lists none); connect the phone by USB with "
                         "USB debugging on (Settings > Developer options) and accept the prompt on the phone")

    def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run a shell command on the device: (its exit status, stdout and stderr together)."""
        p = self._call(["shell", f"{command} 2>&1; echo {_RC_MARKER}$?"], timeout=timeout)
        text = (p.stdout or "") + (p.stderr or "")
        m = re.search(re.escape(_RC_MARKER) + r"(\d+)", text)
        rc = int(m.group(1)) if m else (p.returncode or 255)
        text = re.sub(re.escape(_RC_MARKER) + r"\d+\s*", "", text)
        return rc, text

    def push(self, local: str, remote: str) -> None:
        p = self._call(["push", local, remote])
        if p.returncode != 0:
            raise BenchmarkFailed(f"adb push to {remote} failed: {failure_message((p.stderr or '') + (p.stdout or ''))}")

    def remove(self, remote: str) -> None:
        self.shell(f"rm -f {shlex.quote(remote)}")

    def getprop(self, name: str) -> str:
        p = self._call(["shell", "getprop", name])
        return (p.stdout or "").strip() if p.returncode == 0 else ""

    def is_executable(self, path: str) -> bool:
        rc, _ = self.shell(f"test -x {shlex.quote(path)} -a -f {shlex.quote(path)}")
        return rc == 0

    def describe(self) -> dict:
        """The samples file's device description, from the phone's build properties."""
        g = self.getprop
        model, soc = g("ro.product.model"), g("ro.soc.model") or g("ro.board.platform") or g("ro.hardware")
        release, sdk = g("ro.build.version.release"), g("ro.build.version.sdk")
        return {"machine": model or "unknown Android device", "cpu": soc or "unknown SoC",
                "os": f"Android {release or '?'}" + (f" (SDK {sdk})" if sdk else ""), "hostname": self.serial,
                "manufacturer": g("ro.product.manufacturer") or None, "soc_manufacturer": g("ro.soc.manufacturer") or None,
                "abi": g("ro.product.cpu.abi") or None, "android": release or None, "sdk": sdk or None,
                "serial": self.serial}


# ---- one variant --------------------------------------------------------------------------------------------------
def benchmark_command(binary: str, graph: str, *, threads: int = 1, warmup_runs: int = 1,
                      warmup_min_secs: float = 0.0, num_runs: int = 20, min_secs: float = 0.0,
                      max_secs: float = 150.0, use_gpu: bool = False, use_xnnpack: bool | None = None,
                      cpus: list[int] | None = None) -> str:
    """The shell command that times one variant with the local protocol: W warm-up runs (plus, if asked, a minimum
    warm-up duration), exactly N timed runs (min_secs=0: benchmark_model would otherwise add runs until 1 s)."""
    args = [binary, f"--graph={graph}", f"--num_threads={int(threads)}", f"--warmup_runs={int(warmup_runs)}",
            f"--warmup_min_secs={float(warmup_min_secs):g}", f"--num_runs={int(num_runs)}",
            f"--min_secs={float(min_secs):g}", f"--max_secs={float(max_secs):g}"]
    if use_gpu:
        args.append("--use_gpu=true")
    if use_xnnpack is not None:
        args.append(f"--use_xnnpack={'true' if use_xnnpack else 'false'}")
    cmd = " ".join(shlex.quote(a) for a in args)
    return f"taskset {cpu_mask(cpus)} {cmd}" if cpus else cmd


class AdbBenchmark:
    """Push -> benchmark_model -> parse -> remove, for one variant's bytes at a time."""

    def __init__(self, adb: Adb, binary: str, *, remote_dir: str = DEFAULT_REMOTE_DIR, threads: int = 1,
                 warmup_runs: int = 1, warmup_min_secs: float = 0.0, num_runs: int = 20, use_gpu: bool = False,
                 use_xnnpack: bool | None = None, cpus: list[int] | None = None, run_timeout: float = 900.0):
        self.adb, self.binary, self.remote_dir = adb, binary, remote_dir.rstrip("/") or "/"
        self.opts = dict(threads=threads, warmup_runs=warmup_runs, warmup_min_secs=warmup_min_secs,
                         num_runs=num_runs, use_gpu=use_gpu, use_xnnpack=use_xnnpack, cpus=cpus)
        self.run_timeout = run_timeout
        self._tmpdir = tempfile.mkdtemp(prefix="tfwidth_adb_")

    def check(self) -> None:
        """Refuse to start when the binary is not there: every sample would fail the same way."""
        if not self.adb.is_executable(self.binary):
            raise UsageError(f"benchmark_model is not on the device at {self.binary} (or not executable); push it: "
                             f"`adb push android_aarch64_benchmark_model {self.binary} && adb shell chmod +x "
                             f"{self.binary}` (see docs/android.md), or pass its path to --benchmark-binary")

    def runtime_version(self) -> str:
        """benchmark_model prints no version: identify the build by the binary's hash instead."""
        rc, out = self.adb.shell(f"sha256sum {shlex.quote(self.binary)}")
        m = re.search(r"\b([0-9a-f]{64})\b", out) if rc == 0 else None
        return f"sha256:{m.group(1)[:16]}" if m else "unknown"

    def time(self, variant: bytes, tag: str = "variant") -> BenchmarkOutput:
        """Time one variant; BenchmarkFailed carries a one-line reason (the caller records a failed sample)."""
        name = f"tfwidth_{re.sub(r'[^A-Za-z0-9_.-]', '_', tag)}.tflite"
        local = os.path.join(self._tmpdir, name)
        remote = f"{self.remote_dir}/{name}"
        with open(local, "wb") as f:
            f.write(variant)
        try:
            self.adb.push(local, remote)
            try:
                cmd = benchmark_command(self.binary, remote, **self.opts)
                try:
                    rc, out = self.adb.shell(cmd, timeout=self.run_timeout)
                except UsageError as e:
                    raise BenchmarkFailed(str(e)) from None
                try:
                    parsed = parse_benchmark_output(out)
                except BenchmarkFailed as e:
                    raise BenchmarkFailed(f"exit status {rc}: {e}" if rc else str(e)) from None
                if rc != 0:
                    raise BenchmarkFailed(f"benchmark_model exit status {rc}: {failure_message(out)}")
                return parsed
            finally:
                self.adb.remove(remote)
        finally:
            os.unlink(local)

    def close(self) -> None:
        shutil.rmtree(self._tmpdir, ignore_errors=True)


# ---- a profiling session (the interface of device_profiler.session.Session) -------------------------------------
class AdbSession:
    """Widths -> sample records, timed on the phone. Drop-in for the local Session in ``session.profile``, which
    does resume, the reference re-timing every K samples and the progress bar the same way for both runners."""

    def __init__(self, maker, bench: AdbBenchmark, device: dict, runtime_version: str):
        self.maker, self.bench, self.device, self.runtime_version = maker, bench, device, runtime_version
        self.threads, self.cpus = bench.opts["threads"], bench.opts["cpus"]
        self.invoke_s = 0.0  # seconds benchmark_model spent in warm-up and timed runs (from its own statistics)
        self._warned_median = False

    def record(self, kind: str, index: int, widths, ref_ms) -> dict:
        import datetime
        rec = {"kind": kind, "index": index, "space_hash": self.maker.manifest["space_hash"],
               "widths": [int(w) for w in widths], "status": "ok", "error": None, "ms": None, "warmup_runs": 0}
        try:
            out = self.bench.time(self.maker.make(widths), tag=f"{kind}{index}")
        except BenchmarkFailed as e:
            rec["status"], rec["error"] = "failed", str(e)[:500]
        else:
            inf, warm = out.inference, out.warmup
            ms = inf.ms()
            # benchmark_model prints the population std; the local runner records the sample std (ddof=1).
            n = inf.count
            std = ms["std"] * math.sqrt(n / (n - 1)) if n > 1 else 0.0
            rec["ms"] = {"min": ms["min"], "median": ms["median"], "mean": ms["mean"], "std": std, "count": n}
            rec["warmup_runs"] = warm.count
            if ms["median"] is None and not self._warned_median:
                self._warned_median = True
                print(f"warning: {self.bench.binary} prints no median (an old build): samples get ms.median = null "
                      f"(tfwidth.latency fit uses the min, and says so for --statistic median); a nightly "
                      f"benchmark_model prints it (docs/android.md)",
                      file=sys.stderr)
            rec["benchmark_model"] = {
                "init_ms": None if out.init_us is None else out.init_us / 1000.0,
                "first_inference_ms": None if out.first_inference_us is None else out.first_inference_us / 1000.0,
                "warmup_ms": warm.ms(), "max_ms": ms["max"], "delegate": out.delegate}
            self.invoke_s += sum(s.avg * s.count / 1e6 for s in (inf, warm) if s.count and s.avg is not None)
        rec.update({"runtime": RUNTIME, "runtime_version": self.runtime_version, "threads": self.threads,
                    "cpus": self.cpus, "format": self.maker.manifest["format"], "device": self.device,
                    "ref_ms": rec["ms"]["min"] if kind == "reference" and rec["ms"] else ref_ms,
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        if self.bench.opts["use_gpu"]:
            rec["delegate"] = "gpu"
        elif self.bench.opts["use_xnnpack"]:
            rec["delegate"] = "xnnpack"
        return rec

    def close(self) -> None:
        self.bench.close()


def open_session(maker, *, binary: str, serial: str | None = None, threads: int = 1, cpus: str | None = None,
                 runs: int = 20, warmup_runs: int = 2, warmup_seconds: float = 0.0, use_gpu: bool = False,
                 use_xnnpack: bool = False, remote_dir: str = DEFAULT_REMOTE_DIR) -> AdbSession:
    """Check everything that would make every sample fail (adb, the device, the binary) before timing anything."""
    if use_gpu and use_xnnpack:
        raise UsageError("--use-gpu and --use-xnnpack exclude each other; pick the delegate to time")
    cores = parse_cpus(cpus)
    adb = Adb(serial)
    bench = AdbBenchmark(adb, binary, remote_dir=remote_dir, threads=threads, warmup_runs=warmup_runs,
                         warmup_min_secs=warmup_seconds, num_runs=runs, use_gpu=use_gpu,
                         use_xnnpack=True if use_xnnpack else None, cpus=cores)
    try:
        bench.check()
        if cores:
            rc, out = adb.shell(f"taskset {cpu_mask(cores)} true")
            if rc != 0:
                raise UsageError(f"cannot pin to cores {cpus} on the phone ({failure_message(out)}); list its cores "
                                 f"with `adb shell cat /sys/devices/system/cpu/possible` and pass some to --cpus")
        return AdbSession(maker, bench, adb.describe(), bench.runtime_version())
    except BaseException:
        bench.close()
        raise


def add_arguments(p) -> None:
    """The adb runner's options, added to ``python -m device_profiler``'s parser."""
    p.add_argument("--runner", choices=("local", "adb"), default="local",
                   help="local: time on this machine (default); adb: time on an Android phone attached to this "
                        "host, with TFLite's benchmark_model pushed to it (docs/android.md)")
    g = p.add_argument_group("--runner adb (Android phone over adb)")
    g.add_argument("--benchmark-binary", default=f"{DEFAULT_REMOTE_DIR}/benchmark_model", metavar="PATH",
                   help="benchmark_model on the phone (default /data/local/tmp/benchmark_model; get the prebuilt "
                        "android_aarch64 or android_arm binary, see docs/android.md)")
    g.add_argument("--serial", help="the phone's serial (`adb devices`); needed when several are attached")
    g.add_argument("--remote-dir", default=DEFAULT_REMOTE_DIR, help="where variants are pushed (and removed)")
    d = g.add_mutually_exclusive_group()
    d.add_argument("--use-gpu", action="store_true", help="time with the GPU delegate (--use_gpu=true)")
    d.add_argument("--use-xnnpack", action="store_true",
                   help="force the XNNPACK delegate (--use_xnnpack=true); default: the binary's default CPU path")
