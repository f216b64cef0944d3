"""Time the configurations of a plan on this device, appending one line per configuration to samples.jsonl.

    python -m device_profiler --template template.tflite --plan plan.json --out samples.jsonl
    python -m device_profiler --template template.tflite --benchmark 32,64,...
    python -m device_profiler --runner adb ... --benchmark-binary /data/local/tmp/benchmark_model  (a phone: docs/android.md)
"""
from __future__ import annotations

import datetime
import json
import os
import sys
import time

import numpy as np

from device_profiler import runtime as runtimes
from device_profiler import adb, samples, timing, variants
from device_profiler.checks import count, number, output_file
from device_profiler.errors import ArgumentParser, UsageError, run_cli


class _Progress:
    """tqdm when the device has it; otherwise a line every ~10 s with the ETA."""

    def __init__(self, total: int, desc: str):
        self.total, self.n, self.start, self.last = total, 0, time.time(), 0.0
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="cfg", file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self) -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.update()
            return
        now = time.time()
        if now - self.last >= 10 or self.n == self.total:
            self.last = now
            rate = self.n / max(now - self.start, 1e-9)
            print(f"{self.n}/{self.total} configurations, {rate:.1f}/s, ETA {(self.total - self.n) / rate:.0f} s",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def load_plan(path: str, maker: variants.VariantMaker) -> dict:
    try:
        with open(path) as f:
            plan = json.load(f)
        if not isinstance(plan, dict) or plan.get("kind") != "plan":
            raise ValueError("not a plan")
        configs, reference = plan["configs"], plan["reference"]
    except OSError as e:
        raise UsageError(f"cannot read plan {path} ({e.strerror}); make one with `python -m tfwidth.profile plan`") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"plan {path} is unreadable ({e}); make one with `python -m tfwidth.profile plan`") from None
    if plan.get("space_hash") != maker.manifest["space_hash"]:
        raise UsageError(f"plan {path} was made for space {plan.get('space_hash')} but the template is for space "
                         f"{maker.manifest['space_hash']}; make the plan and the template from the same space.json")
    # every configuration is checked before the first is timed: a bad plan writes nothing
    maker.check_widths(reference, f"plan {path} reference")
    for i, w in enumerate(configs):
        maker.check_widths(w, f"plan {path} configuration {i}")
    return plan


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise UsageError(f"--shard {text!r} should be i/n with 0 <= i < n, e.g. 0/4") from None
    return i, n


class Session:
    """One runtime, one protocol, one device: turns widths into sample records."""

    def __init__(self, maker, runtime, protocol, cpus, seed: int = 0):
        self.maker, self.runtime, self.protocol, self.cpus = maker, runtime, protocol, cpus
        self.rng = np.random.default_rng(seed)
        self.device = timing.describe_device()
        self.invoke_s = 0.0
        self.reference = None

    def pair_with(self, widths) -> None:
        """Time the reference configuration alongside every sample (see timing.time_model)."""
        self.reference = timing.prepare(self.runtime, self.maker.make(widths), self.protocol.threads, self.rng)

    def record(self, kind: str, index: int, widths, ref_ms) -> dict:
        rec = {"kind": kind, "index": index, "space_hash": self.maker.manifest["space_hash"],
               "widths": [int(w) for w in widths], "status": "ok", "error": None, "ms": None, "warmup_runs": 0}
        try:
            paired = self.reference if kind == "sample" else None
            r = timing.time_model(self.runtime, self.maker.make(widths), self.protocol, self.rng, paired)
            rec["ms"], rec["warmup_runs"] = r["ms"], r["warmup_runs"]
            if paired is not None:
                ref_ms = r["ref_ms"]["min"]
            self.invoke_s += r["invoke_s"]
        except (RuntimeError, ValueError) as e:  # the runtime refusing one variant must not stop a long run
            rec["status"], rec["error"] = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:500]
        rec.update({"runtime": self.runtime.name, "runtime_version": self.runtime.version,
                    "threads": self.protocol.threads, "cpus": self.cpus, "format": self.maker.manifest["format"],
                    "device": self.device, "ref_ms": rec["ms"]["min"] if kind == "reference" and rec["ms"] else ref_ms,
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        return rec


def profile(session: Session, plan: dict, out: str, shard=(0, 1), reference_every: int = 25,
            progress: bool = True, paired: bool = False) -> dict:
    """Time the plan's pending configurations of this shard; returns counts and wall/invoke seconds."""
    done, ref_ms = samples.recover(out, session.maker.manifest["space_hash"])
    todo = [i for i in range(len(plan["configs"])) if i % shard[1] == shard[0] and i not in done]
    wall0, invoke0 = time.perf_counter(), session.invoke_s
    if paired and todo:
        session.pair_with(plan["reference"])
    bar = _Progress(len(todo), "profiling") if progress and todo else None
    failed = 0
    with samples.Writer(out) as w:
        for n, i in enumerate(todo):
            # re-time the reference at the start of every run (the device may have changed since) and every K
            if reference_every > 0 and n % reference_every == 0:
                ref = session.record("reference", -1, plan["reference"], ref_ms)
                w.write(ref)
                ref_ms = ref["ref_ms"]
            rec = session.record("sample", i, plan["configs"][i], ref_ms)
            failed += rec["status"] != "ok"
            w.write(rec)
            if bar:
                bar.update()
    if bar:
        bar.close()
    return {"timed": len(todo), "skipped": len(done), "failed": failed,
            "wall_s": time.perf_counter() - wall0, "invoke_s": session.invoke_s - invoke0}


def benchmark(session, maker, text: str, where: str) -> int:
    """--benchmark W1,W2,...: time one configuration with the session's protocol and print its statistics."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"--benchmark {text!r} should be comma-separated channel counts") from None
    maker.check_widths(widths, "--benchmark")
    rec = session.record("sample", 0, widths, None)
    if rec["status"] != "ok":
        raise UsageError(f"the runtime failed on this configuration: {rec['error']}")
    s = rec["ms"]
    med = "n/a" if s["median"] is None else f"{s['median']:.3f}"
    print(f"{where}, {maker.manifest['format']}: min {s['min']:.3f} ms, median {med}, mean {s['mean']:.3f}, "
          f"std {s['std']:.3f} over {s['count']} runs ({rec['warmup_runs']} warm-up)")
    return 0


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m device_profiler", description=(
        "Time width configurations of a MobileNet .tflite template on this device. Each configuration is cut out "
        "of the template (no converter, no TensorFlow), loaded in a fresh interpreter, warmed up and timed N times; "
        "one JSON line per configuration is appended to --out as soon as it is measured, so an interrupted run "
        "resumes where it stopped. Precise protocol on small shared machines: --threads 1 --cpus 0 (min of N)."))
    p.add_argument("--template", required=True, help="template.tflite (its manifest template.json must lie beside it)")
    p.add_argument("--plan", help="plan.json from `python -m tfwidth.profile plan`")
    p.add_argument("--out", type=output_file, help="samples.jsonl to append to (resumed if it exists)")
    p.add_argument("--benchmark", metavar="W1,W2,...", help="time this one configuration and print its statistics")
    p.add_argument("--threads", type=count(1, 1024), default=1, help="interpreter threads (default 1)")
    p.add_argument("--cpus", help="pin to these cores, e.g. 0 or 0,1 (default: not pinned)")
    p.add_argument("--runs", type=count(1, 10**6), default=20, help="timed invokes per configuration (default 20)")
    p.add_argument("--warmup-runs", type=count(0, 10**6), default=2, help="minimum warm-up invokes (default 2)")
    p.add_argument("--warmup-seconds", type=number(0, 3600), default=0.0, help="minimum warm-up time in seconds (default 0)")
    p.add_argument("--reference-every", type=count(0), default=25, metavar="K",
                   help="re-time the plan's reference configuration every K samples to record drift (0: never)")
    p.add_argument("--paired-reference", action="store_true",
                   help="time the reference configuration interleaved with every sample and record its min as the "
                        "sample's ref_ms (twice the invokes; tracks second-to-second load on shared or throttling "
                        "devices, which --reference-every cannot). Small networks share the caches with the "
                        "reference, which then runs at a speed that depends on its partner: check with "
                        "tools/bench_reference.py before pairing at small resolutions (32 px: biased)")
    p.add_argument("--shard", metavar="i/n", help="time only plan indices with index %% n == i (several devices)")
    p.add_argument("--runtime", choices=[r[0] for r in runtimes.RUNTIMES],
                   help="force a runtime (default: the first importable of ai_edge_litert, tflite_runtime, "
                        "tensorflow.lite)")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the random inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    adb.add_arguments(p)
    a = p.parse_args(argv)
    if a.runs < 1 or a.warmup_runs < 0 or a.threads < 1 or a.warmup_seconds < 0:
        raise UsageError("--runs and --threads must be >= 1, --warmup-runs and --warmup-seconds >= 0")
    if a.benchmark is None and (a.plan is None or a.out is None):
        raise UsageError("give --plan and --out (profile a plan) or --benchmark W1,W2,... (time one configuration)")
    if a.runner == "adb":  # a phone: variants cut here, timed there by benchmark_model (device_profiler/adb.py)
        return adb.cli(a, load_plan, parse_shard, profile, benchmark)
    if a.use_gpu or a.use_xnnpack or a.serial:
        raise UsageError("--use-gpu, --use-xnnpack and --serial are options of --runner adb (an Android phone); "
                         "add --runner adb or drop them")
    try:
        cpus = None if a.cpus is None else [int(c) for c in a.cpus.split(",")]
    except ValueError:
        raise UsageError(f"--cpus {a.cpus!r} should be comma-separated core numbers, e.g. 0") from None
    shard = parse_shard(a.shard)
    maker = variants.load(a.template)
    plan = load_plan(a.plan, maker) if a.benchmark is None else None
    rt = runtimes.select(a.runtime)
    try:
        cpus = timing.pin(cpus)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot pin to cores {a.cpus} ({e}); this device has cores "
                         f"{sorted(os.sched_getaffinity(0))}") from None
    protocol = timing.Protocol(a.runs, a.warmup_runs, a.warmup_seconds, a.threads)
    session = Session(maker, rt, protocol, cpus, a.seed)
    if a.benchmark is not None:
        return benchmark(session, maker, a.benchmark, f"{rt.name} {rt.version}, {a.threads} thread(s), cpus {cpus}")
    r = profile(session, plan, a.out, shard, a.reference_every, not a.no_progress, a.paired_reference)
    ratio = r["wall_s"] / r["invoke_s"] if r["invoke_s"] else float("nan")
    print(f"timed {r['timed']} configurations ({r['failed']} failed), skipped {r['skipped']} already in {a.out}; "
          f"wall {r['wall_s']:.1f} s, {r['invoke_s']:.1f} s inside invokes (overhead {ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
