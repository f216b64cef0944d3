"""Does spacing a configuration's visits in time make its timing repeat? (issue 17, deliverable 0)

The profiler times a window of ~25 configurations in visits (device_profiler.session.Session.record_many): one block
of invokes per configuration per round, until two visits' minima agree. At 32 px a round lasts ~2 s, so a slow spell
of several seconds can hold every visit of a configuration, and the visits agree on a slow minimum.
``--spacing S`` starts two visits of one configuration at least S seconds apart. This benchmark times the same
random configurations and uniform ladder twice with each spacing, in one run, in the order A B B A (a drift of the
machine over the run weighs on every spacing alike), each time with the profiler's CLI and its defaults otherwise,
and prints per spacing the A/A figures of the same networks (median difference, 90th percentile, share agreeing
within 5%, raw and reference-corrected), the profiler's wall seconds, and the paired bootstrap interval of each
spacing's median A/A difference minus that of the first spacing.

    python tools/bench_spacing.py --workdir spacing                       # 32 px, spacings 0 and 6 s, ~6 min
    python tools/bench_spacing.py --workdir spacing --resolutions 32,128 --spacings 0,3,8

Timings are reused when their key (template, plan, flags, profiler code) matches: run it again to resume.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_latency import _load, load_sentence, template, timed  # noqa: E402
from tfwidth.artifacts import write_json  # noqa: E402
from tfwidth.errors import UsageError, run_cli  # noqa: E402
from tfwidth.space import preset  # noqa: E402


def parse_list(text: str, kind, what: str) -> list:
    try:
        vals = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 0 for v in vals):
        raise UsageError(f"--{what} {text!r} should be comma-separated non-negative numbers, e.g. 0,6")
    return vals


def rel_diffs(space, a: list[dict], b: list[dict], drift: bool, keys=None) -> dict:
    """{group: |a - b| / mean of the two} per network timed in both files (min statistic); only ``keys`` if given
    (the networks every spacing timed twice, so that the spacings are compared on the same networks, paired)."""
    from tfwidth.latency import groups_of, same_network_pairs
    pairs = same_network_pairs(a, b, "min", drift, None)
    keys = sorted(pairs) if keys is None else keys
    x, y = np.array([pairs[k][0] for k in keys]), np.array([pairs[k][1] for k in keys])
    d = np.abs(x - y) / (0.5 * (x + y))
    masks = groups_of(space, [{"widths": list(k)} for k in keys])
    return {"keys": keys, "all": d, **{g: d[m] for g, m in masks.items() if m.any()}}


def wall_seconds(path: Path) -> float:
    """From the first record's time to the last's in a samples file: the profiler's wall time, also across a
    resumed run (to the second, as the records hold it)."""
    import datetime
    stamps = [datetime.datetime.fromisoformat(t) for t in (json.loads(line).get("time") for line in
                                                             path.read_text().splitlines() if line.strip()) if t]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0


def summary(d: np.ndarray) -> dict:
    return {"n": int(len(d)), "median": float(np.median(d)), "p90": float(np.percentile(d, 90)),
            "max": float(d.max()), "within_5pct": float(np.mean(d <= 0.05))}


def bootstrap_median_gap(d: np.ndarray, base: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Median of d minus median of base (the same networks, paired), with its 95% bootstrap interval."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), (n, len(d)))
    gaps = np.median(d[idx], axis=1) - np.median(base[idx], axis=1)
    return float(np.median(d) - np.median(base)), float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="templates, plans, timings and report.json go here")
    p.add_argument("--preset", default="mobilenet_v1", help="the space, at each resolution (default mobilenet_v1)")
    p.add_argument("--resolutions", default="32", help="comma-separated (default 32)")
    p.add_argument("--spacings", default="0,6", help="seconds between two visits of one configuration; the first "
                                                     "is the baseline (default 0,6)")
    p.add_argument("--configs", type=int, default=100, help="random configurations besides the ladder (default 100)")
    p.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the networks (default 2000)")
    a = p.parse_args(argv)
    resolutions = [int(r) for r in parse_list(a.resolutions, int, "resolutions")]
    spacings = parse_list(a.spacings, float, "spacings")
    if a.configs < 10:
        raise UsageError(f"--configs {a.configs}: at least 10, or the A/A figures say nothing")
    from tfwidth.profile import make_plan
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    fig = {"args": vars(a), "results": {}}
    for r in resolutions:
        space = preset(a.preset, resolution=r)
        d = workdir / f"r{r}"
        d.mkdir(exist_ok=True)
        tpl = d / "template.tflite"
        template(space, "fp32", tpl)
        plan = make_plan(space, a.configs, "random", seed=2)
        order = [(s, "a") for s in spacings] + [(s, "b") for s in reversed(spacings)]
        for s, rnd in order:
            print(f"[{r} px] spacing {s:g} s, timing {rnd}: {len(plan['configs'])} configurations", flush=True)
            timed(tpl, plan, d / f"s{s:g}_{rnd}.jsonl", a.cpu, extra=("--spacing", f"{s:g}"))
        wall = {(s, rnd): wall_seconds(d / f"s{s:g}_{rnd}.jsonl") for s, rnd in order}
        res = {}
        for drift in (False, True):
            files = {s: (_load(d / f"s{s:g}_a.jsonl"), _load(d / f"s{s:g}_b.jsonl")) for s in spacings}
            # a configuration the runtime failed on in one timing is left out of every spacing's figures
            common = sorted(set.intersection(*(set(rel_diffs(space, *files[s], drift)["keys"]) for s in spacings)))
            diffs = {s: rel_diffs(space, *files[s], drift, common) for s in spacings}
            base = diffs[spacings[0]]
            for s in spacings:
                row = res.setdefault(f"{s:g}", {"wall_s": [wall[(s, 'a')], wall[(s, 'b')]]})
                row["corrected" if drift else "raw"] = {
                    g: summary(v) for g, v in diffs[s].items() if g != "keys"}
                row["corrected" if drift else "raw"]["gap"] = bootstrap_median_gap(
                    diffs[s]["all"], base["all"], a.bootstrap)
        fig["results"][str(r)] = dict(res, space_hash=space.space_hash)
        print(f"\n[{r} px] A/A of the same {len(base['keys'])} networks timed twice (|a - b| / mean), per spacing:")
        print(f"  {'spacing':>8} {'reading':<10} {'median':>7} {'p90':>7} {'max':>7} {'<=5%':>6} "
              f"{'median - baseline [95%]':>28} {'wall s (a, b)':>15}")
        for s in spacings:
            row = res[f"{s:g}"]
            for what in ("raw", "corrected"):
                x = row[what]["all"]
                g, lo, hi = row[what]["gap"]
                print(f"  {s:>7g}s {what:<10} {100 * x['median']:6.2f}% {100 * x['p90']:6.2f}% {100 * x['max']:6.1f}% "
                      f"{100 * x['within_5pct']:5.1f}% {100 * g:+9.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]  "
                      f"{row['wall_s'][0]:7.0f} {row['wall_s'][1]:6.0f}")
    fig["load_avg"] = [load0, os.getloadavg()[0]]
    print(load_sentence(load0, fig["load_avg"][1], os.cpu_count()))
    write_json(workdir / "report.json", fig)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
