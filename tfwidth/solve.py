"""Choose one width per layer: the most accurate configuration whose predicted latency meets a target.

The unaries are the supernet's per-layer, per-width loss increases (stats.json; the score to maximise is minus their
sum), the pairwise terms the device's latency table (table.json). Methods: ows (the paper's Lagrangian Viterbi),
exact (constrained DP), greedy (AutoSlim-like), uniform (one width multiplier); see tfwidth.mrf.

    python -m tfwidth.solve --stats RUN/stats.json --latency table.json --target-ms 5 [--method all] -o widths.json
    python -m tfwidth.solve --stats RUN/stats.json --latency table.json --pareto -o pareto
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

from tfwidth import mrf
from tfwidth.artifacts import atomic_write_bytes, figure_png, pyplot, write_json
from device_profiler import console
from device_profiler.checks import cores, count, cpu_list, number, output_file
from tfwidth.errors import ArgumentParser, SpaceMismatch, UsageError
from tfwidth.latency import LatencyTable
from tfwidth.space import SearchSpace
from tfwidth.stats import WidthStats, acc_chain

METHODS = ("exact", "ows", "greedy", "uniform")


@functools.lru_cache(maxsize=8)
def uniform_candidates(space: SearchSpace, points: int = 400) -> list[tuple]:
    """Index tuples of space.uniform(m) over a fine multiplier grid plus the space's own levels, narrow to wide."""
    mults = sorted(set(np.linspace(space.min_mult, space.max_mult, points).tolist()) | set(space.multipliers))
    out = []
    for m in mults:
        idx = space.to_indices(space.uniform(m))
        if not out or idx != out[-1]:
            out.append(idx)
    return out


def latency_range(table: LatencyTable) -> tuple[float, float]:
    """Fastest and slowest predicted latency over all configurations."""
    lat = table.chain()
    return mrf.min_total(lat)[1], -mrf.min_total(lat.scale(-1.0))[1]


def solve(space: SearchSpace, stats_costs, table: LatencyTable, target_ms: float, method: str = "exact",
          max_params: float | None = None) -> mrf.Solution:
    """The configuration chosen by ``method`` (one of METHODS) for the target; refuses an unreachable target."""
    if table.space.space_hash != space.space_hash:
        raise SpaceMismatch(f"latency table is for space {table.space.space_hash} but the stats are for "
                            f"{space.space_hash}; fit the table and train in the same space")
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)} or all")
    if not math.isfinite(target_ms) or target_ms <= 0:
        raise UsageError(f"target latency must be a positive number of ms, got {target_ms}")
    acc, lat = acc_chain(space, stats_costs), table.chain()
    fastest, fastest_ms = mrf.min_total(lat)
    if fastest_ms > target_ms * (1 + 1e-9):
        raise UsageError(f"target {target_ms:g} ms is below the fastest predicted configuration ({fastest_ms:.4f} ms, "
                         f"widths {' '.join(map(str, space.to_widths(fastest)))}); raise --target-ms")
    extra = []
    if max_params is not None:
        pc = space.param_chain()
        min_params = mrf.min_total(pc)[1]
        if max_params < min_params:
            raise UsageError(f"--max-params {max_params:g} is below the smallest configuration's "
                             f"{min_params:.0f} parameters; raise it")
        extra.append((pc, float(max_params)))
    if method == "ows":
        sol = mrf.ows(acc, lat, target_ms, extra)
    elif method == "exact":
        sol = mrf.exact(acc, lat, target_ms, extra)
    elif method == "greedy":
        sol = mrf.greedy(acc, lat, target_ms, extra)
    else:
        sol = mrf.uniform(acc, lat, target_ms, uniform_candidates(space), extra)
    return sol


@dataclasses.dataclass
class Answer:
    """One method's answer for a target: the widths (None: no configuration meets the budgets), the table's
    prediction, the objective (minus the summed loss increases), parameters and MACs; ``gamma`` (the Lagrange
    multiplier of ows), ``certified`` and ``gap`` (exact), and ``verified`` when the answer was timed on this machine
    (measured_ms, met, attempts: see ``meet_target``)."""
    method: str
    widths: tuple | None
    predicted_ms: float | None = None
    objective: float | None = None
    params: int | None = None
    macs: int | None = None
    gamma: float | None = None
    certified: bool | None = None
    gap: float | None = None
    verified: dict | None = None

    @classmethod
    def of(cls, space: SearchSpace, sol: mrf.Solution) -> "Answer":
        if not sol.feasible:
            return cls(sol.method, None)
        w = space.to_widths(sol.indices)
        exact = sol.method == "exact"
        return cls(sol.method, tuple(w), sol.latency, sol.objective, space.params(w), space.macs(w), sol.gamma,
                   sol.certified if exact else None, sol.gap if exact else None)

    def to_json(self) -> dict:
        """The answer as widths.json and the pareto rows hold it."""
        if self.widths is None:
            return {"method": self.method, "widths": None, "predicted_ms": None, "objective": None, "params": None,
                    "macs": None}
        d = {"method": self.method, "widths": list(self.widths), "predicted_ms": self.predicted_ms,
             "objective": self.objective, "params": self.params, "macs": self.macs}
        if self.gamma is not None:
            d["gamma"] = self.gamma
        if self.method == "exact":
            d["certified"], d["gap"] = self.certified, self.gap
        if self.verified is not None:
            d["verified"] = self.verified
        return d


def describe(space: SearchSpace, sol: mrf.Solution) -> dict:
    """``sol`` as a row of widths.json (Answer.to_json)."""
    return Answer.of(space, sol).to_json()


def _table_lines(rows: list[dict]) -> str:
    out = [f"{'method':<8} {'pred ms':>9} {'objective':>10} {'params':>9} {'MMACs':>8}  widths"]
    for r in rows:
        if r["widths"] is None:
            out.append(f"{r['method']:<8} {'-':>9} {'-':>10} {'-':>9} {'-':>8}  no configuration meets the budgets")
            continue
        note = "" if r.get("certified", True) else f"  (within {r['gap']:.3g} of optimal)"
        if "verified" in r:
            v = r["verified"]
            note += (f"  measured here {v['measured_ms']:.4f} ms after {len(v['attempts'])} attempt(s)"
                     + ("" if v["met"] else ", OVER the target"))
        out.append(f"{r['method']:<8} {r['predicted_ms']:>9.4f} {r['objective']:>10.5f} {r['params']:>9d} "
                   f"{r['macs'] / 1e6:>8.2f}  {' '.join(map(str, r['widths']))}{note}")
    return "\n".join(out)


def pareto(space, stats_costs, table, methods=METHODS, points: int = 50, max_params=None) -> list[dict]:
    """Each method's answer for ``points`` targets spread from the fastest to the slowest predicted latency."""
    lo, hi = latency_range(table)
    rows = []
    for t in np.linspace(lo, hi, points):
        for m in methods:
            d = describe(space, solve(space, stats_costs, table, float(t), m, max_params))
            rows.append(dict(d, target_ms=float(t)))
    return rows


def write_pareto(prefix, rows: list[dict], methods) -> tuple[Path, Path]:
    """Write the Pareto sweep ``rows`` to PREFIX.csv and a latency-vs-objective plot of ``methods`` to PREFIX.png;
    returns both paths."""
    prefix = Path(prefix)
    csv_path, png_path = prefix.with_suffix(".csv"), prefix.with_suffix(".png")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["target_ms", "method", "predicted_ms", "objective", "params", "macs", "widths"])
    for r in rows:
        w.writerow([f"{r['target_ms']:.6g}", r["method"], "" if r["widths"] is None else f"{r['predicted_ms']:.6g}",
                    "" if r["widths"] is None else f"{r['objective']:.8g}", r["params"] or "", r["macs"] or "",
                    "" if r["widths"] is None else " ".join(map(str, r["widths"]))])
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    atomic_write_bytes(png_path, pareto_png(rows, methods))
    return csv_path, png_path


def pareto_png(rows: list[dict], methods, target_ms: float | None = None, chosen: dict | None = None) -> bytes:
    """The Pareto sweep ``rows`` of ``methods`` as a latency-vs-objective plot (PNG bytes); ``target_ms`` drawn as a
    vertical line and ``chosen`` (a row: predicted_ms, objective, method) as a star, when given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m in methods:
        pts = sorted({(r["predicted_ms"], r["objective"]) for r in rows if r["method"] == m and r["widths"]})
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=m)
    if target_ms is not None:
        ax.axvline(target_ms, color="k", ls="--", lw=0.8, label=f"target {target_ms:g} ms")
    if chosen is not None and chosen.get("widths"):
        ax.plot([chosen["predicted_ms"]], [chosen["objective"]], marker="*", ms=16, color="crimson", ls="none",
                markeredgecolor="k", label=f"answer ({chosen['method']})", zorder=5)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("objective (- sum of loss increases)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


# ---- meeting a measured target ----------------------------------------------------------------------------------
def costs_hash(costs) -> str:
    """Short hash of a supernet's width costs (rounded), so a refined table's answers can be matched to the statistics
    they were solved with."""
    import hashlib
    h = hashlib.sha256()
    # a ChainCost (pairwise estimator) hashes its unary and pairwise arrays; a plain list is the old hash unchanged
    for c in (tuple(costs.unary) + tuple(costs.pairwise)) if hasattr(costs, "pairwise") else costs:
        h.update(np.round(np.asarray(c, dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:16]


def meet_target(solve_at, measure_ms, target_ms: float, rounds: int = 4, slack: float = 0.0,
                aim_ms: float | None = None) -> dict:
    """Solve at the target, time the answer on the device, and while it runs over ``target_ms * (1 + slack)`` aim
    lower by the measured miss (aim *= target / measured) and solve again, ``rounds`` times at most.

    Why: even a refined table is off by a few percent somewhere, and the solver sits right at the budget, so an
    answer predicted at 100% of the target can run at 104%; a user's budget is a measured one. ``solve_at(aim_ms)``
    returns widths or None (nothing that fast); ``measure_ms(widths)`` times them. ``aim_ms``: where to aim first
    (a refined table records the aim whose answer it timed within the target, see ``refine``). Returns the last
    answer with ``met`` and every attempt (aim, widths, measured)."""
    aim, history = float(aim_ms or target_ms), []
    for _ in range(max(1, int(rounds))):
        w = solve_at(aim)
        if w is None:
            break
        m = float(measure_ms(w))
        history.append({"aim_ms": aim, "widths": [int(x) for x in w], "measured_ms": m})
        if m <= target_ms * (1 + slack):
            return {"widths": history[-1]["widths"], "measured_ms": m, "met": True, "attempts": history}
        aim *= target_ms / m
    last = history[-1] if history else {"widths": None, "measured_ms": None}
    return {"widths": last["widths"], "measured_ms": last["measured_ms"], "met": False, "attempts": history}


def recorded_aim(table: LatencyTable, costs, method: str, target_ms: float) -> float | None:
    """The aim at which ``refine`` timed this statistics' ``method`` answer within ``target_ms`` (None: not refined
    for it). Solving there with the refined table gives that timed answer again."""
    h = costs_hash(costs)
    for r in ((table.fit or {}).get("refine") or {}).get("answers", []):
        if (r.get("costs") == h and r.get("method") == method and r.get("met") and r.get("aim_ms")
                and abs(float(r["target_ms"]) - float(target_ms)) <= 1e-9 * max(1.0, float(target_ms))):
            return float(r["aim_ms"])
    return None


def solve_at(space: SearchSpace, costs, table: LatencyTable, aim_ms: float, method: str,
             max_params: float | None = None) -> mrf.Solution | None:
    """``solve`` aimed at ``aim_ms``, or None when nothing is that fast (an aim below the fastest configuration, or no
    feasible answer): what a loop that aims lower than the target (``meet_target``, tfwidth.refine) solves with."""
    try:
        sol = solve(space, costs, table, aim_ms, method, max_params)
    except UsageError:  # aimed below the fastest configuration
        return None
    return sol if sol.feasible else None


def load_verify_template(path, space: SearchSpace):
    """The template (device_profiler.variants) whose variants ``verified_answer`` times; refuses one of another
    space."""
    from device_profiler.variants import load as load_template
    maker = load_template(path)  # a device_profiler UsageError: tfwidth's derives from it, run_cli shows either
    if maker.manifest.get("space_hash") != space.space_hash:
        raise SpaceMismatch(f"template {path} is for space {maker.manifest.get('space_hash')}, the stats "
                            f"for {space.space_hash}; pass the template the table's samples were cut from")
    return maker


def verified_answer(space: SearchSpace, costs, table: LatencyTable, target_ms: float, method: str, maker, *,
                    rounds: int = 4, cpus=(0,), max_params: float | None = None) -> Answer:
    """The answer that ``meet_target`` settles on, timing variants of the template ``maker`` (load_verify_template)
    on this machine with the export's protocol (the statistic the exported model is judged by), pinned to ``cpus``
    (None: not pinned), at most ``rounds`` times; its ``verified`` holds the timings. Starts at the aim a refined
    table recorded for these statistics, method and target (recorded_aim), unless ``max_params`` constrains it."""
    from tfwidth.host import measure_latency
    sols = {}

    def at(aim_ms):
        sol = solve_at(space, costs, table, aim_ms, method, max_params)
        if sol is None:  # keep the last answer
            return None
        w = space.to_widths(sol.indices)
        sols[w] = sol
        return w

    r = meet_target(at, lambda w: measure_latency(maker.make(w), threads=table.threads or 1,
                                                  cpus=None if cpus is None else list(cpus))["ms"]["min"],
                    target_ms, rounds=rounds,
                    aim_ms=None if max_params else recorded_aim(table, costs, method, target_ms))
    if r["widths"] is None:
        return Answer.of(space, solve(space, costs, table, target_ms, method, max_params))
    ans = Answer.of(space, sols[tuple(r["widths"])])
    ans.verified = {"measured_ms": r["measured_ms"], "met": r["met"], "attempts": r["attempts"]}
    return ans


@dataclasses.dataclass
class Solved:
    """What ``solve_widths`` found: one Answer per method asked (exact's first with method "all"), for ``target_ms``
    and ``max_params``, with what they were solved from. ``document()`` is widths.json."""
    space: SearchSpace
    table: LatencyTable
    target_ms: float
    max_params: float | None
    method: str
    answers: list
    stats: str
    latency: str
    stats_view: str
    stats_estimator: str

    @property
    def best(self) -> Answer:
        """The answer widths.json holds: the method asked for, exact's with "all"."""
        return self.answers[0]

    def unconstrained(self) -> list[dict]:
        """The latency table entries the best answer uses that no sample measured (its prediction is interpolated
        there)."""
        return self.table.unconstrained_on(self.best.widths) if self.best.widths is not None else []

    def document(self) -> dict:
        best = self.best.to_json()
        out = {"kind": "widths", "space_hash": self.space.space_hash, "space": self.space.to_json(),
               "method": best["method"], "target_ms": self.target_ms, "widths": best["widths"],
               "predicted_ms": best["predicted_ms"], "objective": best["objective"], "params": best["params"],
               "macs": best["macs"], "max_params": self.max_params, "table": self.latency, "stats": self.stats,
               "stats_view": self.stats_view, "stats_estimator": self.stats_estimator}
        if self.method == "all":
            out["results"] = [a.to_json() for a in self.answers]
        if "verified" in best:
            out["verified"] = best["verified"]
        return out

    def save(self, path) -> None:
        """``document()`` written to ``path`` (widths.json) atomically, as the CLI writes it."""
        write_json(path, self.document())


def load_inputs(stats, latency, stats_view: str = "auto", stats_estimator: str = "auto"):
    """(statistics, latency table, costs) from the stats.json and table.json at these paths, refused unless they are
    of the same space; the costs are the statistics' ``stats_view`` and ``stats_estimator`` (WidthStats.costs)."""
    st = WidthStats.load(stats)
    table = LatencyTable.load(latency)
    if table.space.space_hash != st.space.space_hash:
        raise SpaceMismatch(f"stats {stats} are for space {st.space.space_hash} but table {latency} is for "
                            f"{table.space.space_hash}; use a table fitted on the space the supernet was trained in")
    return st, table, st.costs(stats_view, stats_estimator)


def solve_widths(stats, latency, target_ms: float, *, method: str = "exact", max_params: float | None = None,
                 stats_view: str = "auto", stats_estimator: str = "auto", verify_template=None,
                 verify_rounds: int = 4, cpus=(0,)) -> Solved:
    """The solve stage: the widths that maximise the statistics at ``stats`` (a run's stats.json; ``stats_view`` and
    ``stats_estimator`` as WidthStats.costs) under ``target_ms`` on the table at ``latency`` (and at most
    ``max_params`` parameters), with ``method`` (one of METHODS, or "all": every one, exact's answer first). With
    ``verify_template`` (the template the table's samples were cut from) each answer is timed on this machine,
    pinned to ``cpus``, and re-aimed while it runs over the target (verified_answer, ``verify_rounds`` attempts at
    most). An infeasible answer is returned as such (Answer.widths None), not raised; nothing is written: write
    ``document()`` to widths.json."""
    if method not in METHODS + ("all",):
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)} or all")
    st, table, costs = load_inputs(stats, latency, stats_view, stats_estimator)
    space = st.space
    methods = METHODS if method == "all" else (method,)
    if verify_template:
        maker = load_verify_template(verify_template, space)
        answers = [verified_answer(space, costs, table, target_ms, m, maker, rounds=verify_rounds, cpus=cpus,
                                   max_params=max_params) for m in methods]
    else:
        answers = [Answer.of(space, solve(space, costs, table, target_ms, m, max_params)) for m in methods]
    return Solved(space, table, target_ms, max_params, method, answers, str(stats), str(latency),
                  st.resolve_view(stats_view), stats_estimator)


def solve_pareto(stats, latency, *, method: str = "exact", points: int = 50, max_params: float | None = None,
                 stats_view: str = "auto", stats_estimator: str = "auto") -> tuple[list[dict], tuple]:
    """The --pareto stage: ``pareto`` of the statistics and table at these paths for ``method`` (or "all"): (the
    rows, the methods swept). Write them with ``write_pareto``."""
    st, table, costs = load_inputs(stats, latency, stats_view, stats_estimator)
    if points < 2:
        raise UsageError(f"--points must be >= 2, got {points}")
    methods = METHODS if method == "all" else (method,)
    return pareto(st.space, costs, table, methods, points, max_params), methods


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.solve", description=(
        "Choose per-layer widths that maximise the supernet's accuracy statistics under a latency target on the "
        "device the table was fitted for (and optionally a parameter budget), with the paper's OWS solver, an exact "
        "constrained DP, or the greedy and uniform-multiplier baselines."))
    p.add_argument("--stats", required=True, help="stats.json of a supernet run (tfwidth.train)")
    p.add_argument("--latency", required=True, help="table.json (python -m tfwidth.latency fit)")
    p.add_argument("--target-ms", type=number(0, 1e6, lo_open=True), help="latency budget in ms (required unless --pareto)")
    p.add_argument("--method", default="exact", choices=METHODS + ("all",),
                   help="solver (default exact); all runs every one and writes exact's answer plus all results")
    p.add_argument("--max-params", type=number(0, 1e15, lo_open=True), help="also keep the deployed parameter count <= this")
    p.add_argument("--stats-view", default="auto", choices=("auto", "probe", "running", "window"),
                   help="which statistics: probe (measured on the trained supernet, tfwidth/probe.py), running (over "
                        "all of training), window (its last epoch); auto: probe when the run has one, else running")
    p.add_argument("--stats-estimator", default="auto", choices=("auto", "regression", "mean", "pairwise"),
                   help="per-width costs from the additive regression of each step's loss increase on its "
                        "configuration (auto, when recorded) or from the per-layer split means (the paper's); "
                        "pairwise (probe view only): the regression plus a cost per adjacent pair of layers for "
                        "departing from the base network's shape (tfwidth/stats.py)")
    p.add_argument("--pareto", action="store_true", help="sweep targets from the fastest to the slowest latency "
                                                         "and write <output>.csv and <output>.png")
    p.add_argument("--points", type=count(2, 10**5), default=50, help="targets in the --pareto sweep (default 50)")
    p.add_argument("-o", "--output", required=True, type=output_file, help="widths.json (or, with --pareto, the CSV/PNG prefix)")
    v = p.add_argument_group("when this machine is the device")
    v.add_argument("--verify-template", help="template.tflite the table's samples were cut from: time each answer "
                   "here (the profiler's protocol) and, while it runs over --target-ms, solve again aiming lower by "
                   "the measured miss")
    v.add_argument("--verify-rounds", type=count(1, 1000), default=4, help="solve-and-time attempts at most (default 4)")
    v.add_argument("--cpus", default="0", type=cpu_list, help="cores to pin the timing to (default 0; 'none': no pinning)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    views = dict(stats_view=a.stats_view, stats_estimator=a.stats_estimator)
    if a.pareto:
        rows, methods = solve_pareto(a.stats, a.latency, method=a.method, points=a.points, max_params=a.max_params,
                                     **views)
        csv_path, png_path = write_pareto(a.output, rows, methods)
        print(f"{a.points} targets x {len(methods)} method(s): "
              + console.wrote([csv_path, png_path], time.perf_counter() - t0))
        return 0
    if a.target_ms is None:
        load_inputs(a.stats, a.latency, **views)  # their errors first
        raise UsageError("give --target-ms (or --pareto to sweep targets)")
    r = solve_widths(a.stats, a.latency, a.target_ms, method=a.method, max_params=a.max_params,
                     verify_template=a.verify_template, verify_rounds=a.verify_rounds, cpus=cores(a.cpus), **views)
    table = r.table
    print(f"target {a.target_ms:g} ms" + (f", at most {a.max_params:g} parameters" if a.max_params else "")
          + f"  (table: {table.runtime or '?'} {table.format or '?'}, {table.threads or '?'} thread(s))")
    print(_table_lines([x.to_json() for x in r.answers]))
    best = r.best
    if best.widths is None:
        raise UsageError(f"{best.method} found no configuration within {a.target_ms:g} ms"
                         + (f" and {a.max_params:g} parameters together; relax one of them" if a.max_params else
                            "; raise --target-ms or try --method exact"))
    used = r.unconstrained()
    if used:
        print(f"warning: the chosen widths use {len(used)} latency table entr{'y' if len(used) == 1 else 'ies'} that "
              f"no sample measured ({', '.join(u['term'] + ' ' + 'x'.join(map(str, u['widths'])) for u in used[:5])}"
              f"{', ...' if len(used) > 5 else ''}); the prediction there is interpolated: time more configurations",
              file=sys.stderr)
    if best.verified is not None and not best.verified["met"]:
        print(f"warning: measured {best.verified['measured_ms']:.4f} ms here, over the {a.target_ms:g} ms target "
              f"after {len(best.verified['attempts'])} attempts; lower --target-ms or refine the table",
              file=sys.stderr)
    r.save(a.output)
    print(console.wrote([a.output], time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
