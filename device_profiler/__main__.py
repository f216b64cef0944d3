"""Time the configurations of a plan on this device, appending one line per configuration to samples.jsonl.

    python -m device_profiler --template template.tflite --plan plan.json --out samples.jsonl
    python -m device_profiler --template template.tflite --benchmark 32,64,...
    python -m device_profiler --runner adb ... --benchmark-binary /data/local/tmp/benchmark_model  (a phone: docs/android.md)

The command line only: the session, the run of a plan and the timing of one configuration are
device_profiler/session.py's (``Session``, ``profile``, ``benchmark``), the phone's session device_profiler/adb.py's.
"""
from __future__ import annotations

import argparse
import sys
import time

from device_profiler import runtime as runtimes
from device_profiler import adb, console, samples, timing, variants
from device_profiler.checks import cores, count, number, output_file
from device_profiler.errors import ArgumentParser, UsageError, invoked_as, run_cli
from device_profiler.session import (DEFAULT_PRECISION, DEFAULT_SPACING, NoiseCheck, benchmark, dump_outputs,
                                     format_benchmark, load_plan, open_local, parse_shard, profile, write_npz)


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
    p.add_argument("--dump-outputs", nargs=2, metavar=("INPUTS.npz", "OUT.npz"),
                   help="time nothing: run each configuration of --plan (or the one of --benchmark) on the examples "
                        "of INPUTS.npz (input0, input1, ...: N examples of each model input, without its batch "
                        "axis) and write their outputs to OUT.npz (index, widths, output0, ...: [configurations, N, "
                        "...]); the same files on two devices show whether they compute the same thing")
    p.add_argument("--threads", type=count(1, 1024), default=1, help="interpreter threads (default 1)")
    p.add_argument("--cpus", help="pin to these cores, e.g. 0 or 0,1 (default: not pinned)")
    p.add_argument("--runs", type=count(1, 10**6), default=20,
                   help="timed invokes per block (default 20); one block per configuration with --precision 0")
    p.add_argument("--precision", type=number(0, 1), default=None, metavar="F",
                   help="time each configuration in visits of --runs invokes, spread over its window of samples, "
                        "until its minimum is reached twice: the second-lowest visit's minimum within F of the "
                        "lowest (default 0.01, i.e. 1%%; 0: one block of --runs invokes). Each sample records the "
                        "precision it reached (precision.reached); the run's noise line says how many reached F")
    p.add_argument("--max-seconds", type=number(0, 3600), default=timing.Protocol.max_seconds, metavar="S",
                   help="stop visiting one configuration after S seconds of its timed invokes (default 2)")
    p.add_argument("--max-blocks", type=count(2, 10**4), default=timing.Protocol.max_blocks, metavar="B",
                   help="... or after B visits (default 4)")
    p.add_argument("--spacing", type=number(0, 3600), default=None, metavar="S",
                   help=f"start two visits of one configuration at least S seconds apart, waiting when a window's "
                        f"round of visits is shorter (default {DEFAULT_SPACING:g}), so a slow spell of the device "
                        f"shorter than S cannot hold every visit of a configuration. Not shown to help on a busy "
                        f"machine, and it costs idle time: docs/benchmarks.md, \"Spacing a configuration's visits\"")
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
    n = p.add_argument_group("noise (a busy or throttling device)", "The profiler times an earlier sample again "
                             "every M samples and the reference every K; a window of K samples whose references "
                             "drift from the run's median, or whose repeats differ, by more than the threshold is "
                             "timed again (and says so). The run ends with a \"noise\" record: the A/A figures the "
                             "fit compares its validation error with.")
    n.add_argument("--noise-threshold", type=number(0, 1), default=NoiseCheck.threshold, metavar="F",
                   help="re-time a window whose reference drift or repeat spread exceeds F (default 0.05, i.e. "
                        "5%%; 0: measure the noise, never re-time)")
    n.add_argument("--repeat-every", type=count(0), default=NoiseCheck.repeat_every, metavar="M",
                   help="time an earlier sample of this run again every M samples (default 10; 0: never)")
    n.add_argument("--retime-max", type=count(0, 100), default=NoiseCheck.retries, metavar="N",
                   help="re-timings of one noisy window at most (default 2); the quietest attempt is kept")
    n.add_argument("--retime-budget", type=number(0, 100), default=NoiseCheck.budget, metavar="F",
                   help="stop re-timing once it has cost F times the rest of the run's wall time (default 0.5)")
    p.add_argument("--shard", metavar="i/n", help="time only plan indices with index %% n == i (several devices)")
    p.add_argument("--runtime", choices=[r[0] for r in runtimes.RUNTIMES],
                   help="force a runtime (default: the first importable of ai_edge_litert, tflite_runtime, "
                        "tensorflow.lite)")
    p.add_argument("--kernels", choices=runtimes.KERNELS, default="default",
                   help="default: the runtime's default delegates (XNNPACK on this kind of CPU); builtin: TFLite's "
                        "built-in kernels without default delegates (a runtime built without XNNPACK). Recorded in "
                        "every sample: the fit refuses to mix them")
    p.add_argument("--seed", type=count(0), default=0, help="seed of the random inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    adb.add_arguments(p)
    a = p.parse_args(argv)
    if a.runs < 1 or a.warmup_runs < 0 or a.threads < 1 or a.warmup_seconds < 0:
        raise UsageError("--runs and --threads must be >= 1, --warmup-runs and --warmup-seconds >= 0")
    if a.dump_outputs:
        try:
            output_file(a.dump_outputs[1])
        except argparse.ArgumentTypeError as e:
            raise UsageError(f"--dump-outputs OUT.npz: {e}") from None
        if a.runner == "adb" or (a.plan is None) == (a.benchmark is None):
            raise UsageError("--dump-outputs runs the configurations of --plan or of --benchmark (one of them) with "
                             "the local runner; give one and drop --runner adb")
    elif a.benchmark is None and (a.plan is None or a.out is None):
        raise UsageError("give --plan and --out (profile a plan) or --benchmark W1,W2,... (time one configuration)")
    if a.runner == "adb":  # a phone: variants cut here, timed there by benchmark_model (device_profiler/adb.py)
        if a.paired_reference:
            raise UsageError("--paired-reference needs the local runner: benchmark_model times one model per run, "
                             "so nothing can be interleaved with it; with --runner adb use --reference-every 1 "
                             "(the reference timed before every sample)")
        if a.kernels != "default":
            raise UsageError("--kernels builtin is an option of the local runner; through adb benchmark_model runs "
                             "the kernels its build and flags choose (see --use-xnnpack): drop --kernels")
        if a.precision:
            raise UsageError("--precision needs the local runner for now: through adb each configuration is one "
                             "benchmark_model run of --runs invokes; drop --precision (or pass 0) with --runner adb")
        if a.spacing:  # None (not given) or 0 are the adb runner's one block per configuration
            raise UsageError("--spacing spaces the visits of --precision, which needs the local runner; drop "
                             "--spacing (or pass 0) with --runner adb")
        return _run(a, adb_session(a))
    if a.use_gpu or a.use_xnnpack or a.serial:
        raise UsageError("--use-gpu, --use-xnnpack and --serial are options of --runner adb (an Android phone); "
                         "add --runner adb or drop them")
    return _run(a, local_session(a))


def local_session(a):
    """(session, plan or None, shard, where) of the local runner for the parsed command line ``a``."""
    try:
        cpus = cores(a.cpus)
    except ValueError:
        raise UsageError(f"--cpus {a.cpus!r} should be comma-separated core numbers, e.g. 0") from None
    shard = parse_shard(a.shard)
    session = open_local(a.template, cpus=cpus, threads=a.threads, runs=a.runs,
                         precision=DEFAULT_PRECISION if a.precision is None else a.precision,
                         max_seconds=a.max_seconds, max_blocks=a.max_blocks, warmup_runs=a.warmup_runs,
                         warmup_seconds=a.warmup_seconds, runtime=a.runtime, kernels=a.kernels, seed=a.seed,
                         spacing=DEFAULT_SPACING if a.spacing is None else a.spacing)
    plan = load_plan(a.plan, session.maker) if a.benchmark is None else None
    rt = session.runtime
    return (session, plan, shard, f"{rt.name} {rt.version}, {a.threads} thread(s), cpus {session.cpus}")


def adb_session(a):
    """(session, plan or None, shard, where) of the adb runner (a phone: variants cut here, timed there by
    benchmark_model, device_profiler/adb.py) for the parsed command line ``a``. --cpus takes a list or ranges
    (taskset)."""
    shard = parse_shard(a.shard)
    maker = variants.load(a.template)
    plan = load_plan(a.plan, maker) if a.benchmark is None else None
    session = adb.open_session(maker, binary=a.benchmark_binary, serial=a.serial, threads=a.threads, cpus=a.cpus,
                               runs=a.runs, warmup_runs=a.warmup_runs, warmup_seconds=a.warmup_seconds,
                               use_gpu=a.use_gpu, use_xnnpack=a.use_xnnpack, remote_dir=a.remote_dir)
    dev = session.device
    return session, plan, shard, f"{dev['machine']} ({dev['cpu']}, {dev['os']}, {dev['hostname']})"


def _run(a, opened) -> int:
    """Time --benchmark's configuration or the plan with the session ``opened`` and print the outcome."""
    session, plan, shard, where = opened
    on_phone = isinstance(session, adb.AdbSession)
    if a.dump_outputs:
        if plan is None:
            items = [(0, session.maker.check_widths(parse_widths(a.benchmark), "--benchmark"))]
        else:
            items = [(i, w) for i, w in enumerate(plan["configs"]) if i % shard[1] == shard[0]]
        t0 = time.perf_counter()
        arrays = dump_outputs(session, items, a.dump_outputs[0])
        write_npz(a.dump_outputs[1], arrays)
        print(f"{console.wrote([a.dump_outputs[1]], time.perf_counter() - t0)}: the outputs of {len(items)} "
              f"configuration(s) on {arrays['output0'].shape[1]} example(s) ({where})")
        return 0
    try:
        if a.benchmark is not None:
            if on_phone:
                where = f"benchmark_model on {where}, {session.threads} thread(s), cpus {session.cpus}"
            runs = None if on_phone else session.protocol.runs
            print(format_benchmark(benchmark(session, parse_widths(a.benchmark)), where,
                                   session.maker.manifest["format"], runs))
            return 0
        if on_phone:
            print(f"profiling on {where} with {a.benchmark_binary}", file=sys.stderr)
        # (never paired on a phone: main refuses --paired-reference with --runner adb)
        r = profile(session, plan, a.out, shard, a.reference_every, not a.no_progress, a.paired_reference,
                    noise_check(a))
    finally:
        if on_phone:
            session.close()
    if on_phone:
        inside = "inside benchmark_model's runs"
    else:
        inside = f"inside invokes (overhead {r['wall_s'] / r['invoke_s']:.2f}x)" if r["invoke_s"] else "inside invokes"
    print(f"timed {r['timed']} configurations ({r['failed']} failed), skipped {r['skipped']} already in {a.out}; "
          f"wall {r['wall_s']:.1f} s, {r['invoke_s']:.1f} s {inside}")
    report_noise(r)
    return 0


def parse_widths(text: str) -> list[int]:
    """--benchmark W1,W2,...: the channel counts."""
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise UsageError(f"--benchmark {text!r} should be comma-separated channel counts") from None


def noise_check(a) -> NoiseCheck:
    return NoiseCheck(a.noise_threshold, a.repeat_every, a.retime_max, a.retime_budget)


def report_noise(r: dict) -> None:
    if r.get("noise"):
        print("noise: " + samples.format_noise(r["noise"]) + (
            f"; {r['retimed_windows']} window(s) re-timed in {r['retime_s']:.1f} s" if r["retimed_windows"] else ""))


def cli() -> int:
    """The `tfwidth-device` entry point (no TensorFlow): main through run_cli, its parser named as typed."""
    invoked_as("python -m device_profiler", "tfwidth-device")
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(run_cli(main))
