"""Benchmark of on-device latency profiling on this machine (LiteRT, fp32, 1 thread pinned to one core).

Measures, in one run:
  1. variants generated per second from the template (flatbuffer patching) vs. one converter run;
  2. fit accuracy vs. number of biased training samples, on held-out random configurations;
  3. the noise floor: the held-out configurations timed twice (A/A), RMSE between the two timings;
  4. profiling overhead: wall time / time spent inside timed and warm-up invokes.
Bars (issue 3): >= 50 variants/s at 224 px; with <= 2000 biased samples >= 95% of held-out within +-5% and
RMSE <= 1.3x the A/A RMSE; overhead <= 1.5x.

    python tools/bench_latency.py            # ~20 min: 128 px, 2000 biased + 2 x 200 random, and 224 px variants/s
    python tools/bench_latency.py --quick    # ~3 min: 500 biased + 2 x 60 random, no 224 px template

Timings share the CPU with whatever else runs: compare ratios from the same run. Work files (templates, plans,
samples) and the report (report.json) go to --workdir; run the same command again to resume an interrupted run. The
converter is timed in every run (the baseline of variants/s is never an earlier run's); a template and its timings
are reused only when their key (tools/_cache.py: space, arguments, plan, template digest, code) matches.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _cache  # noqa: E402
import tfwidth  # noqa: E402,F401
from tfwidth.artifacts import atomic_write_bytes, read_json, write_json  # noqa: E402
from tfwidth.errors import UsageError, run_cli  # noqa: E402
from tfwidth.space import preset  # noqa: E402


TEMPLATE_CODE = ("tfwidth/profile.py", "tfwidth/convert.py", "tfwidth/mobilenet.py")


def template(space, workdir: Path, tag: str) -> tuple[Path, float]:
    """The fp32 max-width template and the seconds of one converter run, timed in this run (the baseline variants/s
    is compared with). The workdir's template is kept when its key matches (space, code), so that timings made on it
    stay valid; otherwise the one converted now replaces it."""
    from tfwidth.profile import make_template
    path = workdir / f"template_{tag}.tflite"
    t0 = time.perf_counter()
    tflite, manifest = make_template(space, "fp32")
    seconds = time.perf_counter() - t0
    parts = {"args": {"space_hash": space.space_hash, "format": "fp32"}, "code": _cache.code_digest(*TEMPLATE_CODE)}
    record = path.with_suffix(".key.json")
    if not (path.exists() and path.with_suffix(".json").exists()
            and _cache.check(record, parts, path.name, leftover=True)):
        atomic_write_bytes(path, tflite)
        write_json(path.with_suffix(".json"), manifest)
        _cache.store(record, parts)
    return path, seconds


def variants_per_second(path: Path, seconds: float = 5.0) -> float:
    from device_profiler.variants import load
    maker = load(path)
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        maker.make([c[rng.integers(len(c))] for c in maker.choices])
        n += 1
    return n / (time.perf_counter() - t0)


def time_plan(tpl: Path, plan: dict, out: Path, runs: int, cpu: int, paired: bool) -> dict:
    from device_profiler import runtime, timing, variants
    from device_profiler.__main__ import Session, profile
    session = Session(variants.load(tpl), runtime.select(), timing.Protocol(runs=runs, warmup_runs=2),
                      timing.pin([cpu]), seed=0)
    return profile(session, plan, str(out), reference_every=25, paired=paired)


def timings(a, space, workdir: Path, fig: dict, sizes: list[int], heldout: int) -> None:
    from tfwidth.profile import make_plan
    # 1. variants/s vs converter
    tpl, conv_s = template(space, workdir, f"{a.resolution}")
    fig["convert_s"] = conv_s
    fig["variants_per_s"] = {str(a.resolution): variants_per_second(tpl)}
    if not a.quick and a.resolution != 224:
        tpl224, conv224 = template(preset("mobilenet_v1", resolution=224), workdir, "224")
        fig["convert_s_224"] = conv224
        fig["variants_per_s"]["224"] = variants_per_second(tpl224)
    for res, v in fig["variants_per_s"].items():
        c = fig.get("convert_s_224" if res == "224" and res != str(a.resolution) else "convert_s")
        print(f"variants: {v:.0f}/s at {res}px, {v * c:.0f}x the converter timed in this run ({c:.1f} s per model)",
              flush=True)

    # 2-4. timings: biased training samples, held-out random configurations timed twice
    plans = {"biased": make_plan(space, max(sizes), "biased", seed=0),
             "heldout": make_plan(space, heldout, "random", seed=1)}
    plans["repeat"] = plans["heldout"]
    summaries = {}
    for name, plan in plans.items():
        out = workdir / f"{name}.jsonl"
        # timings resume only on the same template, plan, protocol and profiler code; otherwise timed afresh
        parts = {"args": {"runs": a.runs, "cpu": a.cpu, "paired": not a.no_paired, "reference_every": 25},
                 "inputs": {"template": _cache.file_digest(tpl), "plan": _cache.key_of(plan)},
                 "code": _cache.code_digest("device_profiler")}
        record = out.with_suffix(".key.json")
        if not _cache.check(record, parts, out.name, leftover=out.exists()):
            out.unlink(missing_ok=True)
            _cache.store(record, parts)
        print(f"timing {len(plan['configs'])} {name} configurations -> {out}", flush=True)
        summaries[name] = time_plan(tpl, plan, out, a.runs, a.cpu, not a.no_paired)
    wall = sum(s["wall_s"] for s in summaries.values())
    inside = sum(s["invoke_s"] for s in summaries.values())
    fresh = [s for s in summaries.values() if s["timed"]]
    if fresh:
        fig["overhead"] = sum(s["wall_s"] for s in fresh) / max(sum(s["invoke_s"] for s in fresh), 1e-9)
        fig["profiling_wall_s"], fig["profiling_invoke_s"] = wall, inside


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller run (~3 min): 500 biased, 60 held-out, no 224 px")
    p.add_argument("--resolution", type=int, default=128, help="profiled resolution (default 128)")
    p.add_argument("--sizes", default=None, help="biased training sizes, comma-separated (default 250,500,1000,2000)")
    p.add_argument("--heldout", type=int, default=None, help="held-out random configurations (default 200)")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per configuration (default 50; min of N)")
    p.add_argument("--reg", type=float, default=None,
                   help="fix the fit's regulariser weight (default: tfwidth.latency chooses it on a holdout)")
    p.add_argument("--no-paired", action="store_true",
                   help="reference re-timed only every 25 samples (default: timed alongside every sample, which "
                        "tracks the load of a shared machine; the fit corrects each sample by it)")
    p.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    p.add_argument("--workdir", default=None, help="work files and report.json, resumable (default "
                                                   "./bench_latency_<px>[_quick][_paired])")
    p.add_argument("--json", help="also write the figures here (they are always in WORKDIR/report.json)")
    p.add_argument("--fit-only", action="store_true",
                   help="re-fit and re-score from the timings already in --workdir: no template, no variants/s, no "
                        "timing (for changes to the fit; the machine may be busy)")
    a = p.parse_args(argv)
    from tfwidth.latency import evaluate, fit_table, load_samples, measured, reference_level

    sizes = [int(s) for s in (a.sizes or ("250,500" if a.quick else "250,500,1000,2000")).split(",")]
    heldout = a.heldout or (60 if a.quick else 200)
    space = preset("mobilenet_v1", resolution=a.resolution)
    workdir = Path(a.workdir or f"bench_latency_{a.resolution}{'_quick' if a.quick else ''}"
                                f"{'' if a.no_paired else '_paired'}")
    workdir.mkdir(parents=True, exist_ok=True)
    fig: dict = {"space": space.name, "resolution": a.resolution, "space_hash": space.space_hash, "runs": a.runs,
                 "reg": a.reg, "paired_reference": not a.no_paired,
                 "cpu": a.cpu, "load_avg_start": os.getloadavg()}
    print(f"bench_latency: {space.name} {a.resolution}px, fp32, 1 thread pinned to cpu {a.cpu}, "
          f"{a.runs} runs/config; workdir {_cache.relative(workdir)}; load average {fig['load_avg_start'][0]:.1f} on "
          f"{os.cpu_count()} cores", flush=True)

    if a.fit_only:
        missing = [n for n in ("biased", "heldout", "repeat") if not (workdir / f"{n}.jsonl").exists()]
        if missing:
            raise UsageError(f"--fit-only: {', '.join(missing)}.jsonl missing in {workdir}; run without --fit-only")
        fig["variants_per_s"] = {}
    else:
        timings(a, space, workdir, fig, sizes, heldout)

    quiet = lambda msg: None  # noqa: E731
    biased = load_samples(workdir / "biased.jsonl", warn=quiet)
    by_index = {d["index"]: d for d in biased}
    held = sorted(load_samples(workdir / "heldout.jsonl", warn=quiet), key=lambda d: d["index"])
    rep = {d["index"]: d for d in load_samples(workdir / "repeat.jsonl", warn=quiet)}
    pairs = [(d, rep[d["index"]]) for d in held if d["index"] in rep]
    # the same drift correction the fit applies: both timings brought to the training samples' reference level (a
    # level per file would hide the speed difference between the two runs that their references measured)
    level = reference_level(biased)
    a_ms = measured([x for x, _ in pairs], "min", True, level)
    b_ms = measured([y for _, y in pairs], "min", True, level)
    fig["aa_rmse_ms"] = float(np.sqrt(np.mean((a_ms - b_ms) ** 2)))
    fig["aa_within_5pct"] = float(np.mean(np.abs(a_ms - b_ms) / b_ms <= 0.05))
    fig["heldout_mean_ms"] = float(a_ms.mean())
    print(f"A/A noise floor (drift-corrected) on {len(pairs)} configurations (mean {a_ms.mean():.2f} ms): RMSE {fig['aa_rmse_ms']:.3f} ms, "
          f"{100 * fig['aa_within_5pct']:.1f}% within +-5% of each other", flush=True)

    fig["fits"] = []
    print(f"{'train':>6} {'RMSE ms':>8} {'xA/A':>6} {'<=5%':>7} {'<=10%':>7} {'max rel':>8} {'fit s':>6}")
    for n in sizes:
        train = [by_index[i] for i in range(n) if i in by_index]
        table, report = fit_table(train, space, reg=a.reg)
        m = evaluate(table, held)
        row = {"n": len(train), "rmse_ms": m["rmse_ms"], "x_aa": m["rmse_ms"] / fig["aa_rmse_ms"],
               "within_5pct": m["within_5pct"], "within_10pct": m["within_10pct"], "max_rel_err": m["max_rel_err"],
               "fit_s": report["seconds"], "unconstrained": report["n_unconstrained"], "reg": report["reg"],
               "prior": report["prior"]}
        fig["fits"].append(row)
        print(f"{row['n']:>6} {row['rmse_ms']:>8.3f} {row['x_aa']:>6.2f} {100 * row['within_5pct']:>6.1f}% "
              f"{100 * row['within_10pct']:>6.1f}% {100 * row['max_rel_err']:>7.1f}% {row['fit_s']:>6.1f}", flush=True)

    fig["load_avg_end"] = os.getloadavg()
    best = min(fig["fits"], key=lambda r: r["rmse_ms"])
    v224 = fig["variants_per_s"].get("224")
    bars = [("variants/s at 224px >= 50", None if v224 is None else v224 >= 50, f"{v224:.0f}/s" if v224 else "not run"),
            ("held-out within +-5% >= 95% (<= 2000 biased)", best["within_5pct"] >= 0.95,
             f"{100 * best['within_5pct']:.1f}% at n={best['n']}"),
            ("RMSE <= 1.3x A/A RMSE", best["x_aa"] <= 1.3, f"{best['x_aa']:.2f}x at n={best['n']}"),
            ("overhead wall/invoke <= 1.5x", fig["overhead"] <= 1.5 if "overhead" in fig else None,
             f"{fig['overhead']:.2f}x" if "overhead" in fig else "no fresh timings (resumed)")]
    fig["bars"] = {name: {"pass": ok, "value": val} for name, ok, val in bars}
    print("bars:")
    for name, ok, val in bars:
        print(f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {name}: {val}")
    print(load_sentence(fig["load_avg_start"][0], fig["load_avg_end"][0], os.cpu_count()))
    write_json(workdir / "report.json", fig)
    if a.json:
        write_json(a.json, fig)
    return 0


def load_sentence(start: float, end: float, cores: int, quiet: float = 0.5) -> str:
    """The machine's load as the report states it: 'shared' only when the load averages say so (one core is ours)."""
    busy = max(start, end) > 1.0 + quiet
    return (f"load average at start {start:.1f}, at end {end:.1f} ({cores} cores): "
            + ("other work shared this CPU (compare ratios from this run only)" if busy
               else "no other work to speak of beside this benchmark"))


if __name__ == "__main__":
    sys.exit(run_cli(main))
