"""tfwidth.refine: the solve-measure-refit loop against a synthetic device the plain fit cannot model. No TensorFlow."""
import json

import numpy as np
import pytest

import tfwidth.latency as L
from tfwidth import refine as R
from tfwidth.space import tiny_space

from conftest import assert_usage_error, run_module
from test_latency import true_table


@pytest.fixture(scope="module")
def space():
    return tiny_space()


def device(space, truth):
    """Additive truth plus what an additive, smoothed table misses: 20 channels run slower than 24 after the stem (a
    SIMD-tile effect, like XNNPACK's at 232/464 vs 256/512), and a wide stem with a wide last layer costs extra
    (two layers that share no table entry)."""
    def ms(w):
        return truth.predict(w) + 0.6 * sum(x == 20 for x in w[1:]) + (0.5 if w[0] >= 20 and w[-1] >= 20 else 0.0)
    return ms


def record(space, w, ms, index=0):
    return {"kind": "sample", "index": index, "space_hash": space.space_hash, "widths": list(w), "status": "ok",
            "error": None, "ms": {"min": ms, "median": ms, "mean": ms, "std": 0.0, "count": 20},
            "runtime": "ai_edge_litert", "runtime_version": "1", "threads": 1, "cpus": [0], "format": "fp32",
            "ref_ms": 1.0}


@pytest.fixture(scope="module")
def setup(space):
    truth = true_table(space)
    dev = device(space, truth)
    rng = np.random.default_rng(3)
    train = [record(space, w, dev(w), i) for i, w in enumerate(space.random_widths(rng) for _ in range(40))]
    table, _ = L.fit_table(train, space)
    costs = [np.linspace(0.3, 0.0, k) * (i + 1) for i, k in enumerate(space.num_choices)]
    lo, hi = table.predict(space.min_widths), table.predict(space.max_widths)
    targets = np.linspace(lo, hi, 6)[1:-1]
    candidates = R.solve_candidates(space, [costs], targets, ("uniform", "greedy", "ows", "exact"))
    measured = []

    def measure(ws):
        measured.append(list(ws))
        return [record(space, w, dev(w)) for w in ws]
    return dict(truth=truth, dev=dev, train=train, table=table, candidates=candidates, measure=measure,
                calls=measured)


def test_refinement_makes_the_solved_configurations_predictable(space, setup):
    s = setup
    before = [abs(s["dev"](w) / s["table"].predict(w) - 1) for w in R.unique(s["candidates"](s["table"]))]
    assert max(before) > 0.3  # the plain fit is far off exactly where the solver chooses
    table, rec = R.refine(s["table"], s["train"], s["candidates"], s["measure"], tol=0.03, rounds=6, weight=10.0,
                          log=lambda m: None)
    assert rec["converged"] and rec["rounds"] == 4 and rec["refits"] == 3
    assert rec["max_abs_err_before"] == pytest.approx(max(before))
    # the returned table's own answers, re-measured, are within the tolerance
    after = [abs(s["dev"](w) / table.predict(w) - 1) for w in R.unique(s["candidates"](table))]
    assert max(after) <= 0.03 and rec["max_abs_err_after"] == pytest.approx(max(after))
    # the record is in the table's fit metadata and survives a round trip, at the first fit's settings
    back = L.LatencyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.fit["refine"]["rounds"] == 4 and len(back.fit["refine"]["history"]) == 4
    assert back.fit["reg"] == s["table"].fit["reg"] and back.fit["prior"] == s["table"].fit["prior"]
    assert back.fit["ref_ms"] == s["table"].fit["ref_ms"] and back.space.space_hash == space.space_hash


def test_neighbours_and_repeats_are_timed_but_only_candidates_are_judged(space, setup):
    s = setup
    s["calls"].clear()
    _, rec = R.refine(s["table"], s["train"], s["candidates"], s["measure"], rounds=1, explore=2, repeats=2,
                      log=lambda m: None)
    first = s["calls"][0]
    cands = R.unique(s["candidates"](s["table"]))
    assert first[:2 * len(cands)] == cands + cands  # repeats interleaved
    near = first[2 * len(cands):]
    assert near and not set(near) & set(cands) and len(set(near)) == len(near)
    assert rec["history"][0]["candidates"] == len(cands)
    assert not rec["converged"] and rec["refits"] == 1  # the last round's timings are still fitted


def test_neighbours_stay_one_choice_away(space):
    rng = np.random.default_rng(0)
    w = space.to_widths((1, 2, 0, 3))
    for n in R.neighbours(space, [w], 20, rng):
        assert np.abs(np.subtract(space.to_indices(n), (1, 2, 0, 3))).max() == 1


def test_weighted_fit_follows_the_heavy_samples(space, setup):
    s = setup
    w = R.unique(s["candidates"](s["table"]))[0]
    extra = [record(space, w, 1.3 * s["dev"](w))]
    light, _ = L.fit_table(s["train"] + extra, space, reg=3.0, prior=1.0)
    heavy, _ = L.fit_table(s["train"] + extra, space, reg=3.0, prior=1.0, weights=[1.0] * 40 + [50.0])
    target = 1.3 * s["dev"](w)
    assert abs(heavy.predict(w) - target) < 0.5 * abs(light.predict(w) - target)
    with pytest.raises(L.UsageError, match="weights"):
        L.fit_table(s["train"], space, reg=3.0, prior=1.0, weights=[1.0] * 3)


def test_bad_arguments_are_one_line(space, tmp_path):
    with pytest.raises(L.UsageError, match="rounds"):
        R.refine(None, [], lambda t: [], lambda w: [], rounds=0)
    proc = run_module("tfwidth.latency", "refine", "--table", tmp_path / "none.json", "--samples", "s.jsonl",
                      "--template", "t.tflite", "--stats", "st.json", "--target-ms", "1", "-o", tmp_path / "o.json")
    assert_usage_error(proc, "does not exist")
    proc = run_module("tfwidth.latency", "refine", "--table", "x", "--samples", "s", "--template", "t",
                      "--stats", "s", "--target-ms", "1", "--methods", "fastest", "-o", tmp_path / "o.json")
    assert_usage_error(proc, "--methods")


def test_samples_timed_elsewhere_are_refused(space, setup, tmp_path):
    s = setup
    table_path = tmp_path / "table.json"
    s["table"].save(table_path)
    samples = [dict(d, device={"hostname": "a-raspberry-pi"}) for d in s["train"]]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(d) + "\n" for d in samples))
    proc = run_module("tfwidth.latency", "refine", "--table", table_path, "--samples", tmp_path / "s.jsonl",
                      "--template", tmp_path / "t.tflite", "--stats", "st.json", "--target-ms", "1",
                      "-o", tmp_path / "o.json")
    assert_usage_error(proc, "a-raspberry-pi", "run it on that device")


def test_protocol_is_read_from_the_samples(tmp_path):
    ref = {"kind": "reference", "status": "ok", "widths": [24, 24], "ms": {"min": 1.0}}
    smp = {"kind": "sample", "status": "ok", "widths": [8, 8], "ms": {"min": 0.5, "count": 10}, "threads": 1,
           "cpus": [0], "runtime": "ai_edge_litert", "device": {"hostname": "h"}}
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps(d) for d in (ref, dict(smp, ref_ms=1.0), dict(smp, ref_ms=1.0))) + "\n")
    pr = R.sample_protocol(p)
    assert (pr["runs"], pr["threads"], pr["cpus"], pr["paired"], pr["reference"]) == (10, 1, [0], False, [24, 24])
    p.write_text("\n".join(json.dumps(d) for d in (ref, dict(smp, ref_ms=1.02), dict(smp, ref_ms=0.98))) + "\n")
    assert R.sample_protocol(p)["paired"]


def test_meet_target_aims_lower_by_the_measured_miss():
    from tfwidth.refine import meet_target
    # a "solver" whose answer is the aim itself and a device 10% slower than predicted below 5 ms, exact above
    device = lambda w: w[0] * (1.10 if w[0] < 5 else 1.0)  # noqa: E731
    r = meet_target(lambda aim: (aim,), device, 4.0)
    assert r["met"] and len(r["attempts"]) == 2
    assert r["attempts"][1]["aim_ms"] == pytest.approx(4.0 / 1.10)
    assert r["measured_ms"] == pytest.approx(4.0)
    # already within the target: one attempt, aimed at the target
    r = meet_target(lambda aim: (aim,), device, 6.0)
    assert r["met"] and [a["aim_ms"] for a in r["attempts"]] == [6.0]
    # nothing fast enough: not met, the last answer kept; no answer at all: None
    r = meet_target(lambda aim: (max(aim, 3.0),), lambda w: w[0] * 1.2, 3.0, rounds=3)
    assert not r["met"] and len(r["attempts"]) == 3 and r["widths"] == [3]
    r = meet_target(lambda aim: None, device, 1.0)
    assert not r["met"] and r["widths"] is None and r["attempts"] == []


def test_targets_are_met_as_measured_and_predicted_by_the_returned_table(space, setup):
    """With targets the loop settles answers that are timed within their target and predicted within the tolerance
    by the table it returns; the synthetic device is off where the plain table cannot see (SIMD tiles, pairs)."""
    s = setup
    costs = [np.linspace(0.3, 0.0, k) * (i + 1) for i, k in enumerate(space.num_choices)]
    lo, hi = s["table"].predict(space.min_widths), s["table"].predict(space.max_widths)
    entries, answers = R.solve_answers(space, [costs], np.linspace(lo, hi, 6)[1:-1], ("greedy", "ows", "exact"))
    targets = [t for _, t, _ in entries]
    table, rec = R.refine(s["table"], s["train"], answers, s["measure"], tol=0.03, rounds=12, weight=10.0,
                          targets=targets, log=lambda m: None)
    assert rec["converged"]
    for r, t in zip(rec["answers"], targets):
        if r["widths"] is None:
            continue
        assert r["met"] and s["dev"](r["widths"]) == pytest.approx(r["measured_ms"]) and r["measured_ms"] <= t
        assert abs(r["measured_ms"] / table.predict(r["widths"]) - 1) <= 0.03
        assert r["predicted_ms"] == pytest.approx(table.predict(r["widths"]))
    # the returned table solves each target's recorded aim back to the very answer that was timed
    assert answers(table, [r["aim_ms"] for r in rec["answers"]]) == [
        None if r["widths"] is None else tuple(r["widths"]) for r in rec["answers"]]


def test_an_answer_just_over_its_target_is_aimed_lower_by_the_miss(space, setup):
    """A device 2% slower than the table everywhere: within the tolerance, so no refit can help; the solver sits at
    the target, so every aimed answer runs over it until aimed 2% lower."""
    s = setup
    table = s["table"]
    slow = lambda ws: [record(space, w, 1.02 * table.predict(w)) for w in ws]  # noqa: E731
    mid = space.multipliers[len(space.multipliers) // 2]
    target = 1.01 * table.predict(space.uniform(mid))  # the answer at the target runs 1% over it
    uniform_at = lambda t, aims: [space.uniform(max(m for m in space.multipliers  # noqa: E731
                                                     if t.predict(space.uniform(m)) <= aims[0]))]
    _, rec = R.refine(table, s["train"], uniform_at, slow, tol=0.03, rounds=5, targets=[target], log=lambda m: None)
    tried = rec["answers"][0]
    assert rec["converged"] and tried["met"] and tried["measured_ms"] <= target
    assert rec["rounds"] >= 2 and tried["aim_ms"] < target and tried["widths"] != list(space.uniform(mid))
    # a fixed answer (target None) is never re-aimed and never blocks acceptance for being slow
    _, rec = R.refine(table, s["train"], lambda t, aims: [space.max_widths], slow, targets=[None],
                      log=lambda m: None)
    assert rec["converged"] and rec["rounds"] == 1 and rec["answers"][0]["aim_ms"] is None


def test_recorded_aim_finds_the_answer_of_the_same_statistics_method_and_target(space, setup):
    costs = [np.linspace(0.3, 0.0, k) for k in space.num_choices]
    table = L.LatencyTable.from_json(setup["table"].to_json())
    table.fit = dict(table.fit, refine={"answers": [
        {"costs": R.costs_hash(costs), "method": "ows", "target_ms": 2.0, "aim_ms": 1.9, "met": True}]})
    assert R.recorded_aim(table, costs, "ows", 2.0) == 1.9
    assert R.recorded_aim(table, costs, "exact", 2.0) is None
    assert R.recorded_aim(table, costs, "ows", 2.1) is None
    assert R.recorded_aim(table, [c + 0.01 for c in costs], "ows", 2.0) is None
    r = R.meet_target(lambda aim: (aim,), lambda w: w[0], 2.0, aim_ms=1.9)
    assert r["met"] and [a["aim_ms"] for a in r["attempts"]] == [1.9]


def test_a_refit_that_puts_every_aim_out_of_reach_keeps_the_timed_answers(space, setup):
    """The device is 20% slower than the table everywhere and the only answer sits at the fastest configuration: after
    the refit nothing is predicted within the aim, so the loop stops with the answer it timed, marked not met."""
    s = setup
    table = s["table"]
    slow = lambda ws: [record(space, w, 1.2 * table.predict(w)) for w in ws]  # noqa: E731
    target = table.predict(space.min_widths)

    def at(t, aims):
        return [space.min_widths if t.predict(space.min_widths) <= aims[0] else None]
    refined, rec = R.refine(table, s["train"], at, slow, rounds=5, targets=[target], log=lambda m: None)
    assert not rec["converged"] and rec["rounds"] == 1
    r = rec["answers"][0]
    assert r["widths"] == list(space.min_widths) and not r["met"] and r["measured_ms"] > target
