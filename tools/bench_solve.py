"""Benchmark the width solvers on the 14-layer default space: time per target and how the methods compare.

    python tools/bench_solve.py [--stats RUN/stats.json --latency table.json] [--points 50] [--seed 0]

Without real files it makes a realistic synthetic problem: latency roughly proportional to MACs plus per-entry noise
and a fixed overhead; loss increases decreasing and convex in width with per-layer sensitivities.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# runnable from a checkout without installing, like the other benchmarks
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfwidth  # noqa: E402,F401
from tfwidth.latency import LatencyTable
from tfwidth.solve import METHODS, latency_range, solve
from tfwidth.space import preset
from tfwidth.stats import WidthStats


def synthetic_table(space, rng) -> LatencyTable:
    mc = space.mac_chain()
    ms_per_mac = 25.0 / space.macs(space.uniform(1.0))  # ~25 ms for the 1.0x network
    def noisy(a):
        return a * ms_per_mac * (1 + 0.08 * rng.standard_normal(a.shape)).clip(0.7)
    stem, head = noisy(mc.unary[0]) + 0.4, noisy(mc.unary[-1]) + 0.1
    blocks = [noisy(p) + 0.02 for p in mc.pairwise]
    return LatencyTable(space, stem, blocks, head, format="fp32", runtime="synthetic", threads=1)


def synthetic(seed: int, resolution: int = 224):
    space = preset("mobilenet_v1", resolution=resolution)
    rng = np.random.default_rng(seed)
    table = synthetic_table(space, rng)
    costs = []
    for ch in space.choices:
        x = np.asarray(ch, float) / ch[-1]  # 0..1
        sens = rng.uniform(0.02, 0.3)
        costs.append(sens * (1 - x) ** 2 * (1 + 0.1 * rng.random(len(ch))) + rng.uniform(0, 0.005, len(ch)) * (x < 1))
    return space, costs, table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stats", help="stats.json of a supernet run (default: synthetic costs)")
    p.add_argument("--latency", help="table.json for the same space (default: synthetic, from MACs)")
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats-view", default="running")
    a = p.parse_args(argv)
    if a.stats:
        stats = WidthStats.load(a.stats)
        space, costs = stats.space, stats.costs(a.stats_view)
        if a.latency:
            table = LatencyTable.load(a.latency, space)
        else:
            table = synthetic_table(space, np.random.default_rng(a.seed))
        print(f"real stats {a.stats} ({stats.epochs} epochs), "
              + (f"table {a.latency}" if a.latency else "synthetic table (latency ~ MACs + 8% noise)"))
    else:
        space, costs, table = synthetic(a.seed)
        print(f"synthetic problem (seed {a.seed}): latency ~ MACs + 8% noise, convex decreasing costs")
    lo, hi = latency_range(table)
    print(f"space {space.name} {space.resolution}px, {space.num_layers} layers, choices {space.num_choices}; "
          f"predicted latency {lo:.3f} .. {hi:.3f} ms")
    targets = np.linspace(lo, hi, a.points)
    times = {m: [] for m in METHODS}
    res = {m: [] for m in METHODS}
    # CPU time of this process, beside wall time: the machine is shared, and wall time then mostly measures the others.
    t_all, c_all = time.perf_counter(), time.process_time()
    for t in targets:
        for m in METHODS:
            t0 = time.process_time()
            s = solve(space, costs, table, float(t), m)
            times[m].append(time.process_time() - t0)
            res[m].append(s)
    sweep, sweep_cpu = time.perf_counter() - t_all, time.process_time() - c_all
    print(f"\nper-target CPU time (ms): {'method':<8} {'median':>8} {'max':>8}")
    for m in METHODS:
        tm = 1e3 * np.array(times[m])
        print(f"{'':26}{m:<8} {np.median(tm):>8.2f} {tm.max():>8.2f}")
    bars = {"ows": 20.0, "exact": 1000.0}
    for m, bar in bars.items():
        med = 1e3 * float(np.median(times[m]))
        print(f"bar {m} <= {bar:g} ms per target: median {med:.2f} ms -> {'PASS' if med <= bar else 'FAIL'}")
    print(f"bar 50-target sweep of all methods <= 5 s: {sweep_cpu:.2f} s CPU ({sweep:.2f} s wall, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) for {a.points} targets -> "
          f"{'PASS' if sweep_cpu <= 5 * a.points / 50 else 'FAIL'}")
    ex = np.array([s.objective for s in res["exact"]])
    cert = sum(s.certified for s in res["exact"])
    gaps = [s.gap for s in res["exact"] if not s.certified]
    print(f"\nexact certified optimal on {cert}/{a.points} targets" + (f" (largest remaining gap {max(gaps):.2g})" if gaps else ""))
    for m in ("ows", "greedy", "uniform"):
        o = np.array([s.objective if s.feasible else -np.inf for s in res[m]])
        diff = ex - o
        fin = np.isfinite(diff)
        beats = (diff > 1e-9) & fin
        worse = (diff < -1e-9) & fin
        rel = diff[beats] / np.maximum(np.abs(o[beats]), 1e-12)
        print(f"exact vs {m:<7}: better on {beats.sum()}/{a.points} targets "
              + (f"(objective gain mean {diff[beats].mean():.5f}, max {diff[beats].max():.5f}; "
                 f"relative mean {100 * rel.mean():.2f}%)" if beats.any() else "")
              + (f"; {m} infeasible on {(~fin).sum()}" if (~fin).any() else "")
              + (f"; WORSE than {m} on {worse.sum()} (discretisation)" if worse.any() else ""))
    infeasible_ows = sum(not s.feasible for s in res["ows"])
    print(f"ows infeasible on {infeasible_ows}/{a.points} targets (all targets are achievable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
