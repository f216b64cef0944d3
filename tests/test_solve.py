"""tfwidth.solve: the library call against brute force on a tiny space, and the CLI."""
import csv
import itertools
import json

import numpy as np
import pytest

from conftest import assert_usage_error, run_module
from tfwidth.latency import LatencyTable
from tfwidth.solve import METHODS, latency_range, solve
from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats


@pytest.fixture(scope="module")
def space():
    return tiny_space(layers=4, levels=3)


def make_table(space, seed=0, unconstrained=()):
    rng = np.random.default_rng(seed)
    ks = space.num_choices
    blocks = [np.cumsum(np.cumsum(rng.uniform(0.05, 0.5, (a, b)), 0), 1) for a, b in zip(ks, ks[1:])]
    return LatencyTable(space, np.cumsum(rng.uniform(0.1, 0.3, ks[0])), blocks, np.cumsum(rng.uniform(0, .1, ks[-1])),
                        format="fp32", runtime="ai_edge_litert", threads=1, unconstrained=unconstrained)


def make_stats(space, seed=0):
    rng = np.random.default_rng(seed)
    st = WidthStats(space)
    n = 400
    choices = np.stack([rng.integers(0, k, n) for k in space.num_choices], 1)
    # loss increase falls with width, per-layer sensitivity
    sens = rng.uniform(0.1, 1.0, space.num_layers)
    delta = ((np.array([k - 1 for k in space.num_choices]) - choices) * sens).sum(1) * 0.1
    st.update(choices, delta + rng.normal(0, 0.01, n))
    st.end_epoch()
    return st


def brute(space, costs, table, target, max_params=None):
    best = None
    for idx in itertools.product(*[range(k) for k in space.num_choices]):
        w = space.to_widths(idx)
        if table.predict(w) <= target and (max_params is None or space.params(w) <= max_params):
            obj = -sum(c[i] for c, i in zip(costs, idx))
            best = obj if best is None else max(best, obj)
    return best


def test_solve_matches_brute_force(space):
    table, costs = make_table(space), make_stats(space).costs()
    lo, hi = latency_range(table)
    mid_params = (space.params(space.min_widths) + space.params(space.max_widths)) / 2
    for target in np.linspace(lo, hi, 7):
        for mp in (None, mid_params):
            want = brute(space, costs, table, target, mp)
            sols = {m: solve(space, costs, table, float(target), m, mp) for m in METHODS}
            if want is None:
                assert not sols["exact"].feasible
                continue
            assert sols["exact"].objective == pytest.approx(want, abs=1e-9)
            for m, s in sols.items():
                if s.feasible:
                    w = space.to_widths(s.indices)
                    assert table.predict(w) <= target + 1e-9 and s.objective <= want + 1e-9
                    assert mp is None or space.params(w) <= mp
            if mp is None:
                assert sols["ows"].feasible


def test_solve_refuses_unreachable_target_and_other_space(space):
    table, costs = make_table(space), make_stats(space).costs()
    lo, _ = latency_range(table)
    with pytest.raises(Exception, match=f"fastest predicted configuration \\({lo:.4f} ms"):
        solve(space, costs, table, lo * 0.9, "ows")
    other = tiny_space(layers=4, levels=4)
    with pytest.raises(Exception, match=other.space_hash):
        solve(other, make_stats(other).costs(), table, 10.0)
    bad = [c.copy() for c in costs]
    bad[1][0] = np.nan
    with pytest.raises(Exception, match="NaN"):
        solve(space, bad, table, 10.0)


def test_cli_all_methods_pareto_and_errors(space, tmp_path):
    lo, hi = latency_range(make_table(space))
    target = (lo + hi) / 2
    chosen = solve(space, make_stats(space).costs(), make_table(space), target, "exact")
    used = {"term": "stem", "widths": [space.to_widths(chosen.indices)[0]]}  # flag an entry the answer uses
    table = make_table(space, unconstrained=[used])
    table.save(tmp_path / "table.json")
    make_stats(space).save(tmp_path / "stats.json")
    r = run_module("tfwidth.solve", "--stats", "stats.json", "--latency", "table.json", "--target-ms", target,
                   "--method", "all", "-o", "w.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for m in METHODS:
        assert f"\n{m} " in "\n" + r.stdout
    out = json.loads((tmp_path / "w.json").read_text())
    assert out["kind"] == "widths" and out["method"] == "exact" and out["space_hash"] == space.space_hash
    assert [x["method"] for x in out["results"]] == list(METHODS)
    assert out["predicted_ms"] == pytest.approx(table.predict(out["widths"])) and out["predicted_ms"] <= target
    assert out["params"] == space.params(out["widths"]) and out["macs"] == space.macs(out["widths"])
    costs = make_stats(space).costs()
    assert out["objective"] == pytest.approx(brute(space, costs, table, target))
    assert f"warning: the chosen widths use 1 latency table entry that no sample measured (stem {used['widths'][0]})" \
        in r.stderr

    r = run_module("tfwidth.solve", "--stats", "stats.json", "--latency", "table.json", "--pareto", "--points", 6,
                   "--method", "all", "-o", "front", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((tmp_path / "front.csv").open()))
    assert len(rows) == 6 * len(METHODS) and (tmp_path / "front.png").stat().st_size > 1000
    for row in rows:  # exact is the best at every target
        if row["method"] != "exact" and row["objective"]:
            ex = next(x for x in rows if x["method"] == "exact" and x["target_ms"] == row["target_ms"])
            assert float(row["objective"]) <= float(ex["objective"]) + 1e-6

    r = run_module("tfwidth.solve", "--stats", "stats.json", "--latency", "table.json", "--target-ms", lo * 0.5,
                   "-o", "x.json", cwd=tmp_path)
    assert_usage_error(r, "below the fastest predicted configuration", f"{lo:.4f} ms")
    other = tiny_space(layers=4, levels=4)
    make_stats(other).save(tmp_path / "other.json")
    r = run_module("tfwidth.solve", "--stats", "other.json", "--latency", "table.json", "--target-ms", target,
                   "-o", "x.json", cwd=tmp_path)
    assert_usage_error(r, other.space_hash, space.space_hash)
    d = table.to_json()
    d["blocks"][0][0][0] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(d))
    r = run_module("tfwidth.solve", "--stats", "stats.json", "--latency", "nan.json", "--target-ms", target,
                   "-o", "x.json", cwd=tmp_path)
    assert_usage_error(r, "NaN")
    assert not (tmp_path / "x.json").exists()


def test_solve_widths_is_what_the_cli_writes(space, tmp_path):
    """The solve stage's library function returns the answers the CLI prints and writes: its document() is the
    widths.json of the same arguments; an infeasible answer comes back as such instead of raising."""
    from tfwidth.errors import run_cli
    from tfwidth.solve import Answer, main, solve_widths
    table = make_table(space)
    table.save(tmp_path / "table.json")
    make_stats(space).save(tmp_path / "stats.json")
    lo, hi = latency_range(table)
    target = (lo + hi) / 2
    args = dict(stats=str(tmp_path / "stats.json"), latency=str(tmp_path / "table.json"))
    assert run_cli(main, ["--stats", args["stats"], "--latency", args["latency"], "--target-ms", str(target),
                          "--method", "all", "-o", str(tmp_path / "w.json")]) == 0
    r = solve_widths(args["stats"], args["latency"], target, method="all")
    assert json.loads(json.dumps(r.document())) == json.loads((tmp_path / "w.json").read_text())
    assert [a.method for a in r.answers] == list(METHODS) and r.best.method == "exact"
    assert isinstance(r.best, Answer) and r.best.predicted_ms <= target
    assert r.best.widths == space.to_widths(solve(space, make_stats(space).costs(), table, target, "exact").indices)
    tiny = solve_widths(args["stats"], args["latency"], target, method="greedy", max_params=space.params(
        space.min_widths) * 1.0001)
    assert tiny.best.widths in (None, tuple(space.min_widths))
