"""Benchmark the width solvers on a preset's space (default mobilenet_v1, 14 width variables in a chain): time per
target and how the methods compare.

    python tools/bench_solve.py [--preset mobilenet_v2] [--stats RUN/stats.json --latency table.json] [--points 50]
        [--seed 0] [--max-params N]

Without real files it makes a realistic synthetic problem on the preset: each latency term of its architecture
roughly proportional to its MACs plus per-entry noise and a fixed overhead; loss increases decreasing and convex in
width with per-variable sensitivities. --max-params adds a parameter budget to every method (the exact solver's
budgeted DP then runs over two budgets); the peak resident memory of the process is printed either way.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

# runnable from a checkout without installing, like the other benchmarks
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfwidth  # noqa: E402,F401
from tfwidth.latency import LatencyTable
from tfwidth.solve import METHODS, latency_range, solve
from tfwidth.space import preset
from tfwidth.errors import run_cli
from tfwidth.stats import WidthStats


def term_macs(space) -> list:
    """The multiply-accumulates each latency term of ``space``'s architecture stands for, one array per term (shaped
    by its variables' choices, in ``latency_terms`` order): space.mac_chain() is per variable and per edge, so a
    variable's MACs go to the single-variable terms on it and an edge's to the terms on that edge, split evenly when
    several share one. A variable's MACs with no single-variable term on it go to the first term touching it
    (broadcast over the other width): the table then still sums to the network's MACs."""
    terms = space.architecture.latency_terms(space)
    mc, edges = space.mac_chain(), space.edges
    out = []
    for t in terms:
        same = sum(1 for u in terms if u.variables == t.variables)
        src = mc.unary[t.variables[0]] if len(t.variables) == 1 else mc.pairwise[edges.index(t.variables)]
        out.append(np.asarray(src, float) / same)
    unary_terms = {t.variables[0] for t in terms if len(t.variables) == 1}
    for v, u in enumerate(mc.unary):
        if v not in unary_terms and np.any(u):
            i = next(i for i, t in enumerate(terms) if v in t.variables)
            out[i] = out[i] + (u[:, None] if terms[i].variables[0] == v else u[None, :])
    return out


def synthetic_table(space, rng) -> LatencyTable:
    """A latency table of ``space``'s architecture: each term ~ its share of the MACs (``term_macs``), ~25 ms for the
    1.0x network, with 8% per-entry noise (drawn from ``rng``: single-variable terms first, then the others, each in
    term order: MobileNetV1's stem, head, blocks as this tool always drew them), plus a per-op overhead: 0.4 ms on
    the first term (invoke, input), 0.1 ms on other single-variable terms, 0.02 ms on two-variable ones."""
    terms = space.architecture.latency_terms(space)
    ms_per_mac = 25.0 / space.macs(space.uniform(1.0))
    macs = term_macs(space)
    arrays = [None] * len(terms)
    for arity in (1, 2):
        for i, t in enumerate(terms):
            if len(t.variables) == arity:
                a = macs[i]
                over = 0.4 if i == 0 else 0.1 if arity == 1 else 0.02
                arrays[i] = a * ms_per_mac * (1 + 0.08 * rng.standard_normal(a.shape)).clip(0.7) + over
    # grouped as the table holds them (a slice of terms is a list of arrays)
    parts = [arrays[at] for _, at in space.architecture.table_layout(space)]
    return LatencyTable(space, *parts, format="fp32", runtime="synthetic", threads=1)


def synthetic(seed: int, resolution: int | None = None, preset_name: str = "mobilenet_v1"):
    """(space, per-variable costs, table) of a synthetic problem on the preset (its own resolution unless given)."""
    space = preset(preset_name, resolution=resolution)
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
    p.add_argument("--preset", default="mobilenet_v1",
                   help="space of the synthetic problem (default mobilenet_v1; with --stats: the stats' space)")
    p.add_argument("--stats", help="stats.json of a supernet run (default: synthetic costs)")
    p.add_argument("--latency", help="table.json for the same space (default: synthetic, from MACs)")
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats-view", default="running")
    p.add_argument("--max-params", type=float, help="parameter budget for every method and target (default none)")
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
        space, costs, table = synthetic(a.seed, preset_name=a.preset)
        print(f"synthetic problem (seed {a.seed}): latency ~ MACs + 8% noise, convex decreasing costs")
    lo, hi = latency_range(table)
    print(f"space {space.name} {space.resolution}px, {space.num_layers} layers, choices {space.num_choices}; "
          f"predicted latency {lo:.3f} .. {hi:.3f} ms")
    if a.max_params is not None:
        print(f"parameter budget {a.max_params:.0f} on every target (uniform 1.0x: "
              f"{space.params(space.uniform(1.0)):.0f}, max: {space.params(space.max_widths):.0f})")
    # ru_maxrss is the process's peak resident set (KiB on Linux): before the sweep vs after it is what solving took
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    targets = np.linspace(lo, hi, a.points)
    times = {m: [] for m in METHODS}
    res = {m: [] for m in METHODS}
    # CPU time of this process, beside wall time: the machine is shared, and wall time then mostly measures the others.
    t_all, c_all = time.perf_counter(), time.process_time()
    for t in targets:
        for m in METHODS:
            t0 = time.process_time()
            s = solve(space, costs, table, float(t), m, max_params=a.max_params)
            times[m].append(time.process_time() - t0)
            res[m].append(s)
    sweep, sweep_cpu = time.perf_counter() - t_all, time.process_time() - c_all
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {rss1:.0f} MiB after the sweep, {rss0:.0f} MiB before it")
    print(f"\nper-target CPU time (ms): {'method':<8} {'median':>8} {'max':>8}")
    for m in METHODS:
        tm = 1e3 * np.array(times[m])
        print(f"{'':26}{m:<8} {np.median(tm):>8.2f} {tm.max():>8.2f}")
    bars = {"ows": 20.0, "exact": 1000.0}
    for m, bar in bars.items():
        med = 1e3 * float(np.median(times[m]))
        over = sum(1e3 * t > bar for t in times[m])
        print(f"bar {m} <= {bar:g} ms per target: median {med:.2f} ms -> {'PASS' if med <= bar else 'FAIL'} "
              f"({over}/{a.points} targets above it)")
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
    sys.exit(run_cli(main))
