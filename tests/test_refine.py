"""tfwidth.refine: the solve-measure-refit loop against a synthetic device the plain fit cannot model. No TensorFlow."""
import json

import numpy as np
import pytest

import tfwidth.latency as L
from tfwidth import refine as R
from tfwidth import solve as S
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
    assert rec["converged"] and rec["rounds"] >= 2 and rec["refits"] == rec["rounds"] - 1
    assert rec["max_abs_err_before"] == pytest.approx(max(before))
    # the returned table's own answers, re-measured, are within the tolerance
    after = [abs(s["dev"](w) / table.predict(w) - 1) for w in R.unique(s["candidates"](table))]
    assert max(after) <= 0.03 and rec["max_abs_err_after"] == pytest.approx(max(after))
    # the record is in the table's fit metadata and survives a round trip, at the first fit's settings
    back = L.LatencyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.fit["refine"]["rounds"] == rec["rounds"] and len(back.fit["refine"]["history"]) == rec["rounds"]
    assert back.fit["reg"] == s["table"].fit["reg"] and back.fit["prior"] == s["table"].fit["prior"]
    assert back.fit["scale"] == s["table"].fit["scale"]
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
    proc = run_module("tfwidth.refine", "--table", tmp_path / "none.json", "--samples", "s.jsonl",
                      "--template", "t.tflite", "--stats", "st.json", "--target-ms", "1", "-o", tmp_path / "o.json")
    assert_usage_error(proc, "does not exist")
    proc = run_module("tfwidth.refine", "--table", "x", "--samples", "s", "--template", "t",
                      "--stats", "s", "--target-ms", "1", "--methods", "fastest", "-o", tmp_path / "o.json")
    assert_usage_error(proc, "--methods")
    # the refinement's old place in the latency CLI points to its own command, in one line
    assert_usage_error(run_module("tfwidth.latency", "refine", "--table", "x"), "python -m tfwidth.refine")


def test_samples_timed_elsewhere_are_refused(space, setup, tmp_path):
    s = setup
    table_path = tmp_path / "table.json"
    s["table"].save(table_path)
    samples = [dict(d, device={"hostname": "a-raspberry-pi"}) for d in s["train"]]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(d) + "\n" for d in samples))
    proc = run_module("tfwidth.refine", "--table", table_path, "--samples", tmp_path / "s.jsonl",
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
    assert (R.sample_protocol(p)["precision"], R.sample_protocol(p)["spacing"]) == (0.0, 0.0)  # an older profiler
    prec = {"target": 0.01, "reached": 0.004, "blocks": 2, "visits": 2, "met": True, "spacing": 6.0}
    p.write_text("\n".join(json.dumps(d) for d in (ref, dict(smp, ref_ms=1.0, precision=prec),
                                                   dict(smp, ref_ms=1.0, precision=prec))) + "\n")
    pr = R.sample_protocol(p)
    assert (pr["runs"], pr["precision"], pr["spacing"]) == (5, 0.01, 6.0)  # the refinement times the same way


def test_meet_target_aims_lower_by_the_measured_miss():
    from tfwidth.solve import meet_target
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
        {"costs": S.costs_hash(costs), "method": "ows", "target_ms": 2.0, "aim_ms": 1.9, "met": True}]})
    assert S.recorded_aim(table, costs, "ows", 2.0) == 1.9
    assert S.recorded_aim(table, costs, "exact", 2.0) is None
    assert S.recorded_aim(table, costs, "ows", 2.1) is None
    assert S.recorded_aim(table, [c + 0.01 for c in costs], "ows", 2.0) is None
    r = S.meet_target(lambda aim: (aim,), lambda w: w[0], 2.0, aim_ms=1.9)
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


# ---- what blocked a loop that did not converge (refine's diagnosis) ----------------------------------------------
@pytest.fixture(scope="module")
def plain(space):
    """A device the table can express exactly (the additive truth), its plain fit, and the solver's answers."""
    truth = true_table(space)
    rng = np.random.default_rng(5)
    train = [record(space, w, truth.predict(w), i) for i, w in enumerate(space.random_widths(rng) for _ in range(60))]
    table, _ = L.fit_table(train, space)
    costs = [np.linspace(0.3, 0.0, k) * (i + 1) for i, k in enumerate(space.num_choices)]
    lo, hi = table.predict(space.min_widths), table.predict(space.max_widths)
    candidates = R.solve_candidates(space, [costs], np.linspace(lo, hi, 6)[1:-1], ("uniform", "greedy", "ows", "exact"))
    return dict(truth=truth, train=train, table=table, candidates=candidates)


def by_round(space, ms_of, ref_of=lambda n: 1.0):
    """A synthetic device that knows which round it is timing: ms_of(widths, round), ref_ms = ref_of(round)."""
    state = {"round": 0}

    def measure(ws):
        state["round"] += 1
        n = state["round"]
        return [dict(record(space, w, ms_of(w, n)), ref_ms=ref_of(n)) for w in ws]
    return measure


def test_a_noisy_device_is_diagnosed_as_noise(space, plain):
    """Timings 10% apart at random on a device the table fits exactly: the repeats within a round differ by as much
    as the error that is left."""
    rng = np.random.default_rng(0)
    noisy = by_round(space, lambda w, n: plain["truth"].predict(w) * (1 + 0.10 * rng.standard_normal()))
    _, rec = R.refine(plain["table"], plain["train"], plain["candidates"], noisy, rounds=4, repeats=3,
                      log=lambda m: None)
    assert not rec["converged"] and rec["blocked_by"] == "noise", rec.get("diagnosis")
    ev = rec["evidence"]
    assert ev["repeat_spread"] >= R.NOISE_SHARE * ev["left"] and ev["left"] == rec["max_abs_err_after"]
    assert rec["diagnosis"].startswith(f"timings of the same configuration differ by {100 * ev['repeat_spread']:.1f}% "
                                       "(range over median of its repeats in one round")
    assert "the tolerance 3% is below this noise floor" in rec["diagnosis"]


@pytest.mark.parametrize("seen_by", ["configurations", "reference"])
def test_a_device_whose_speed_changes_each_round_is_a_moving_device(space, plain, seen_by):
    """The device runs 15% fast, 12% slow, ... by round, its repeats within a round identical. Either the
    configurations' timings move and the reference does not (it was not timed in the slow spell), or the reference
    moves and the configurations do not (a load that slows the wide reference and not the small networks): both
    move the drift-corrected timings the loop compares, by round."""
    speed = {1: 1.15, 2: 0.88, 3: 1.15, 4: 0.88}
    fixed = [space.to_widths(i) for i in ((0, 1, 2, 3), (3, 2, 1, 0), (1, 1, 2, 2), (2, 3, 0, 1))]
    truth = plain["truth"].predict
    dev = (by_round(space, lambda w, n: truth(w) * speed[n]) if seen_by == "configurations" else
           by_round(space, lambda w, n: truth(w), ref_of=lambda n: 1 / speed[n]))
    _, rec = R.refine(plain["table"], plain["train"], lambda t: fixed, dev, rounds=4, repeats=3, log=lambda m: None)
    assert not rec["converged"] and rec["blocked_by"] == "moving device", rec.get("diagnosis")
    ev = rec["evidence"]
    assert ev["repeat_spread"] == 0.0
    if seen_by == "configurations":
        assert ev["level_move"] == 0.0 and ev["drift_configs"] == 4
        assert abs(ev["config_drift"]) == pytest.approx(abs(0.88 / 1.15 - 1)) or abs(ev["config_drift"]) == (
            pytest.approx(1.15 / 0.88 - 1))
        assert rec["diagnosis"].startswith("the 4 configurations timed in rounds ")
        assert rec["diagnosis"].endswith("more than the tolerance 3% and twice the 0.0% by which repeats within a "
                                         "round differ")
    else:
        assert ev["level_move"] == pytest.approx(1.15 / 0.88 - 1)
        assert ev["reference_levels_ms"] == pytest.approx([1 / speed[n] for n in range(1, 5)])
        assert rec["diagnosis"] == (f"the reference level moved {100 * (1.15 / 0.88 - 1):.1f}% between rounds "
                                    f"(0.8696 ms in round 1, 1.136 ms in round 2), more than the tolerance 3% and "
                                    f"twice the 0.0% by which repeats within a round differ")


def test_a_device_the_reference_tracks_converges_without_a_diagnosis(space, plain):
    """The same moving device, but its reference slows with it: the drift correction removes the move."""
    speed = {n: 1.15 if n % 2 else 0.88 for n in range(1, 9)}
    fixed = [space.to_widths(i) for i in ((0, 1, 2, 3), (3, 2, 1, 0), (1, 1, 2, 2), (2, 3, 0, 1))]
    dev = by_round(space, lambda w, n: plain["truth"].predict(w) * speed[n], ref_of=lambda n: speed[n])
    _, rec = R.refine(plain["table"], plain["train"], lambda t: fixed, dev, rounds=8, repeats=3, log=lambda m: None)
    assert rec["converged"] and "blocked_by" not in rec and "diagnosis" not in rec
    assert R.outcome(rec).startswith(f"[refine] converged after {rec['rounds']} round(s): ")
    assert "blocked" not in R.outcome(rec)


def test_an_effect_no_chain_table_can_express_is_model_bias(space, plain):
    """Layers 0 and 3 share no table entry, so any table predicts f(A) + f(D) = f(B) + f(C) for the four corners of
    (first width, last width) with the middle fixed. The device costs 30% more at the wide-wide corner only: whatever
    the weight, some corner stays a quarter of that off, the same way every round, while every timing agrees."""
    truth = plain["truth"].predict
    corners = [space.to_widths((a, 1, 1, b)) for a in (0, 3) for b in (0, 3)]
    wide = corners[-1]
    dev = by_round(space, lambda w, n: truth(w) * (1.3 if w == wide else 1.0))
    _, rec = R.refine(plain["table"], plain["train"], lambda t: corners, dev, rounds=5, repeats=3,
                      log=lambda m: None)
    assert not rec["converged"] and rec["blocked_by"] == "model bias", rec.get("diagnosis")
    ev = rec["evidence"]
    assert ev["repeat_spread"] == 0.0 and ev["level_move"] == 0.0 and ev["config_drift"] in (None, 0.0)
    last = rec["history"][-1]
    worst = max(last["errors"], key=lambda r: abs(r["error"]))
    signs = [np.sign(r["error"]) for h in rec["history"] for r in h["errors"] if r["widths"] == worst["widths"]]
    assert len(signs) == 5 and len(set(signs[1:])) == 1  # off the same way in every round after its first timing
    assert rec["diagnosis"] == (
        f"timings agree to 0.0% (range over median), but the refit cannot fit them: worst "
        f"{','.join(map(str, worst['widths']))} measured {worst['measured_ms']:.4f} ms, predicted "
        f"{worst['predicted_ms']:.4f} ms ({100 * worst['error']:+.1f}%), off the same way in 4 of the 4 later "
        f"round(s) although its timings were in the fit with weight 10")
    assert rec["max_abs_err_after"] > 0.03
    assert R.outcome(rec) == (f"[refine] NOT converged after 5 round(s): max |measured/predicted - 1| on the "
                              f"candidates {100 * rec['max_abs_err_before']:.1f}% -> "
                              f"{100 * rec['max_abs_err_after']:.1f}% (tolerance 3%); blocked by model bias: "
                              f"{rec['diagnosis']}")


def test_unconverged_reads_the_record_and_stops_only_well_above_the_tolerance(space, plain, tmp_path):
    table = L.LatencyTable.from_json(plain["table"].to_json())
    path = tmp_path / "t.json"
    table.save(path)
    assert R.unconverged(path) is None  # not refined
    base = {"converged": False, "tol": 0.03, "rounds": 12, "max_abs_err_before": 0.4, "blocked_by": "noise",
            "diagnosis": "d"}
    assert R.stop_at(0.03) == R.STOP_ERR == 0.10 and R.stop_at(0.2) == pytest.approx(0.4)
    for left, stop in ((0.062, False), (0.10, False), (0.101, True), (0.65, True)):
        table.fit = dict(plain["table"].fit, refine=dict(base, max_abs_err_after=left))
        table.save(path)
        u = R.unconverged(path)
        assert u["stop"] is stop and u["blocked_by"] == "noise" and u["max_abs_err_after"] == left
    table.fit = dict(plain["table"].fit, refine=dict(base, converged=True, max_abs_err_after=0.02))
    table.save(path)
    assert R.unconverged(path) is None


def test_a_worst_configuration_timed_only_in_the_last_round_is_named_so(space):
    """Model bias of a loop whose answers kept moving: its worst configuration was new in the last round, so no refit
    has seen it yet; and without any configuration timed twice, noise cannot be ruled out (and is said so)."""
    a, b = [8, 8, 8, 8], [12, 12, 12, 12]
    err = lambda w, m, p: {"widths": w, "measured_ms": m, "predicted_ms": p, "error": m / p - 1}  # noqa: E731
    history = [{"errors": [err(a, 1.0, 1.0)], "worst": err(a, 1.0, 1.0), "max_abs_err": 0.0},
               {"errors": [err(b, 1.2, 1.0)], "worst": err(b, 1.2, 1.0), "max_abs_err": 0.2}]
    d = R.diagnose([[record(space, a, 1.0)], [record(space, b, 1.2)]], history, 0.03, 0.2)
    assert d["blocked_by"] == "model bias" and d["evidence"]["repeat_spread"] is None
    assert d["diagnosis"] == ("no configuration was timed twice, so noise is not ruled out, but the table misses where "
                              "the solver went last: worst 12,12,12,12 measured 1.2000 ms, predicted 1.0000 ms "
                              "(+20.0%), timed for the first time in the last round (the answers kept moving to "
                              "configurations the fit had not seen)")


def test_refine_table_is_the_loop_on_the_solvers_answers_saved(space, setup, tmp_path, monkeypatch):
    """The refine stage's library function, with a stand-in for this machine: the same loop as ``refine`` with
    ``solve_answers``' candidates and targets, its answers labelled with their method and statistics, the table
    saved where asked."""
    from tfwidth.stats import WidthStats
    s = setup
    s["table"].save(tmp_path / "table.json")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(d) + "\n" for d in s["train"]))
    st = WidthStats(space)
    rng = np.random.default_rng(0)
    choices = np.stack([rng.integers(0, k, 300) for k in space.num_choices], 1)
    st.update(choices, ((np.array(space.num_choices) - 1 - choices) * 0.1).sum(1))
    st.end_epoch()
    st.save(tmp_path / "stats.json")

    class Here:
        def __init__(self, template, out_dir, protocol):
            self.rt = type("RT", (), {"name": "ai_edge_litert"})()
            self.protocol = protocol

        def __call__(self, configs):
            return s["measure"](configs)
    monkeypatch.setattr(R, "HostDevice", Here)
    lo, hi = s["table"].predict(space.min_widths), s["table"].predict(space.max_widths)
    targets = [float(t) for t in np.linspace(lo, hi, 5)[1:-1]]
    lines = []
    got = R.refine_table(tmp_path / "table.json", tmp_path / "s.jsonl", tmp_path / "t.tflite",
                         [tmp_path / "stats.json"], targets, tmp_path / "refined.json", methods=("ows", "exact"),
                         rounds=3, cpus=None, log=lines.append)
    entries, answers = R.solve_answers(space, [st.costs()], targets, ("ows", "exact"))
    table, rec = R.refine(s["table"], L.load_samples(tmp_path / "s.jsonl"), answers, s["measure"], rounds=3,
                          repeats=3, explore=R.EXPLORE, targets=[t for _, t, _ in entries], log=lambda m: None)
    assert [r["widths"] for r in got.record["answers"]] == [r["widths"] for r in rec["answers"]]
    assert [(r["method"], r["stats"]) for r in got.record["answers"]] == [
        (m, str(tmp_path / "stats.json")) for _, _, m in entries]
    saved = L.LatencyTable.load(tmp_path / "refined.json")
    assert saved.predict(space.max_widths) == pytest.approx(table.predict(space.max_widths))
    assert got.output == tmp_path / "refined.json" and got.timings == tmp_path / "refined.refine"
    assert got.validation is None and lines[0].startswith("[refine] protocol of") and "cpus None" in lines[0]


def test_answer_solver_answers_fixed_entries_with_their_widths(space, setup):
    costs = [np.linspace(0.3, 0.0, k) * (i + 1) for i, k in enumerate(space.num_choices)]
    t = float(setup["table"].predict(space.uniform(0.75)))
    entries = [(costs, t, "ows"), (costs, None, "exact"), (costs, t, "exact")]
    answers = R.answer_solver(space, entries, fixed={1: space.uniform(0.5)})(setup["table"], [t, None, t])
    solved = R.solve_candidates(space, [costs], [t], ("ows", "exact"))(setup["table"])
    assert answers == [solved[0], space.uniform(0.5), solved[1]]
