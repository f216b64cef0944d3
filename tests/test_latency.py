"""tfwidth.latency: fit on synthetic samples from a known table, sample-file checks, CLI errors."""
import json
import re

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import lsq_linear

import tfwidth.latency as L
from tfwidth.space import tiny_space

from conftest import assert_usage_error, run_module


def true_table(space, seed=0):
    """A random non-negative table, monotone (wider is never faster)."""
    rng = np.random.default_rng(seed)
    ks = space.num_choices
    stem = np.cumsum(rng.uniform(0.05, 0.3, ks[0])) + 0.2
    head = np.cumsum(rng.uniform(0.01, 0.1, ks[-1]))
    blocks = [np.cumsum(np.cumsum(rng.uniform(0.02, 0.4, (a, b)), axis=0), axis=1) for a, b in zip(ks, ks[1:])]
    return L.LatencyTable(space, stem, blocks, head)


def make_samples(space, table, n, seed=1, noise=0.0, **fields):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = space.random_widths(rng)
        ms = table.predict(w) * (1 + noise * rng.standard_normal())
        d = {"kind": "sample", "index": len(out), "space_hash": space.space_hash, "widths": list(w), "status": "ok",
             "error": None, "ms": {"min": ms, "median": ms * 1.02, "mean": ms * 1.03, "std": 0.01, "count": 20},
             "runtime": "ai_edge_litert", "runtime_version": "1.2", "threads": 1, "cpus": [0], "format": "fp32",
             "ref_ms": 1.0}
        d.update(fields)
        out.append(d)
    return out


def write_jsonl(path, samples, tail=""):
    path.write_text("".join(json.dumps(d) + "\n" for d in samples) + tail)
    return path


@pytest.fixture(scope="module")
def space():
    return tiny_space()


def test_noise_free_fit_reproduces_the_table_predictions(space):
    truth = true_table(space)
    train = make_samples(space, truth, 300)
    test = make_samples(space, truth, 100, seed=2)
    table, rep = L.fit_table(train, space)
    m = L.evaluate(table, test)
    assert m["max_rel_err"] < 1e-3 and m["within_5pct"] == 1.0
    assert rep["validation"]["n"] == 30 and rep["reg"] in L.REG_GRID
    assert all(a.min() >= 0 for a in [table.stem, table.head, *table.blocks])


def test_noisy_fit_is_close_and_chain_matches_predict(space):
    truth = true_table(space, seed=3)
    table, _ = L.fit_table(make_samples(space, truth, 400, noise=0.02), space)
    test = make_samples(space, truth, 200, seed=5)
    assert L.evaluate(table, test)["within_10pct"] >= 0.95
    ch = table.chain()
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = space.random_widths(rng)
        assert ch.total(space.to_indices(w)) == pytest.approx(table.predict(w), rel=1e-12)


def test_solver_matches_lsq_linear_reference(space):
    """With the hinge's active set frozen at the solution, the objective is a bounded linear least-squares problem:
    scipy's lsq_linear on the stacked rows must agree."""
    truth = true_table(space, seed=7)
    samples = make_samples(space, truth, 60, noise=0.05)  # fewer samples than unknowns: the regularisers matter
    lay = L._TableLayout(space)
    A, y = lay.design(L._indices(space, samples)), L.measured(samples)
    for reg in (0.0, 3.0):
        x = L._solve(A, y, lay.D, reg, tol=1e-14)
        active = (lay.D @ x) > 1e-9
        rows = sp.vstack([A, reg * lay.D[active], L.ANCHOR * lay.D, L.RIDGE * sp.identity(lay.n)]).tocsr()
        rhs = np.r_[y, np.zeros(rows.shape[0] - len(y))]
        ref = lsq_linear(rows.toarray(), rhs, bounds=(0, np.inf), method="bvls", tol=1e-14).x
        f, f_ref = L.objective(A, y, lay.D, reg, x), L.objective(A, y, lay.D, reg, ref)
        assert f == pytest.approx(f_ref, rel=1e-6)
        # the sampled configurations' predictions are pinned by the data (others may sit in flat directions)
        np.testing.assert_allclose(A @ x, A @ ref, rtol=1e-3)


def test_monotone_regulariser_repairs_a_noisy_inversion(space):
    truth = true_table(space, seed=11)
    samples = make_samples(space, truth, 120, noise=0.08, seed=12)
    lay = L._TableLayout(space)
    A, y = lay.design(L._indices(space, samples)), L.measured(samples)
    viol = [float(np.maximum(lay.D @ L._solve(A, y, lay.D, r), 0).sum()) for r in (0.0, 30.0)]
    assert viol[1] < 0.1 * viol[0]


def test_round_trip_and_unconstrained_entries(space, tmp_path):
    truth = true_table(space)
    # only the two narrowest widths ever used: the rest of the table is unconstrained
    rng = np.random.default_rng(0)
    samples = make_samples(space, truth, 40)
    for d in samples:
        d["widths"] = [ch[rng.integers(2)] for ch in space.choices]
        d["ms"]["min"] = truth.predict(d["widths"])
    table, rep = L.fit_table(samples, space, reg=1.0)
    assert rep["n_unconstrained"] == len(table.unconstrained) > 0
    assert {"term": "head", "widths": [space.choices[-1][-1]]} in table.unconstrained
    assert {"term": "stem", "widths": [space.choices[0][0]]} not in table.unconstrained
    table.save(tmp_path / "t.json")
    back = L.LatencyTable.load(tmp_path / "t.json")
    w = space.max_widths
    assert back.predict(w) == table.predict(w) and back.unconstrained == table.unconstrained
    assert back.format == "fp32" and back.runtime == "ai_edge_litert" and back.threads == 1
    assert len(back.unconstrained_on(w)) == space.num_layers + 1


def test_drift_correction(space):
    truth = true_table(space)
    samples = make_samples(space, truth, 3)
    samples[1]["ref_ms"] = 2.0  # the device ran twice as slow when this sample was timed
    samples[1]["ms"]["min"] *= 2
    y = L.measured(samples, drift=True)
    assert y[1] == pytest.approx(truth.predict(samples[1]["widths"]))
    assert L.measured(samples, drift=False)[1] == pytest.approx(2 * truth.predict(samples[1]["widths"]))


def test_load_samples_checks(space, tmp_path):
    truth = true_table(space)
    good = make_samples(space, truth, 5)
    ref = dict(good[0], kind="reference", index=-1)
    failed = dict(good[1], status="failed", error="boom")
    warnings = []
    p = write_jsonl(tmp_path / "s.jsonl", [ref, failed] + good, tail='{"kind": "sample", "wid')
    got = L.load_samples(p, warn=warnings.append)
    assert len(got) == 5 and any("truncated" in w for w in warnings) and any("1 failed" in w for w in warnings)
    for bad, msg in [({"min": float("nan")}, "ms.min is nan"), ({"median": 0.0}, "ms.median is 0.0")]:
        d = json.loads(json.dumps(good[0]))
        d["ms"].update(bad)
        with pytest.raises(L.UsageError, match=msg):
            L.load_samples(write_jsonl(tmp_path / "b.jsonl", [d] + good))
    mixed = good + make_samples(space, truth, 2, runtime="tensorflow.lite")
    with pytest.raises(L.UsageError, match="mix several runtime values.*--allow-mixed"):
        L.load_samples(write_jsonl(tmp_path / "m.jsonl", mixed))
    assert len(L.load_samples(tmp_path / "m.jsonl", allow_mixed=True)) == 7
    (tmp_path / "c.jsonl").write_text("{broken\n" + json.dumps(good[0]) + "\n")
    with pytest.raises(L.UsageError, match="c.jsonl:1 is not valid JSON"):
        L.load_samples(tmp_path / "c.jsonl")


def run(*args, cwd):
    return run_module("tfwidth.latency", *args, cwd=cwd, timeout=120)


def test_cli_fit_validate_and_errors(space, tmp_path):
    truth = true_table(space)
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "s.jsonl", make_samples(space, truth, 200, noise=0.01))
    write_jsonl(tmp_path / "v.jsonl", make_samples(space, truth, 50, seed=4, noise=0.01))
    r = run("fit", "s.jsonl", "-o", "t.json", "--space", "space.json", "--validation", "v.jsonl", "--plot", "f.png",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "validation: 50 samples" in r.stdout and "within 5%" in r.stdout
    assert (tmp_path / "f.png").stat().st_size > 1000
    r = run("validate", "t.json", "v.jsonl", cwd=tmp_path)
    assert r.returncode == 0 and "v.jsonl: 50 samples" in r.stdout, r.stderr

    other = tiny_space(layers=5)
    write_jsonl(tmp_path / "o.jsonl", make_samples(other, true_table(other), 5))
    assert_usage_error(run("validate", "t.json", "o.jsonl", cwd=tmp_path), f"made for space {other.space_hash}")
    assert_usage_error(run("fit", "o.jsonl", "-o", "x.json", "--space", "space.json", cwd=tmp_path),
                       other.space_hash, space.space_hash)
    # tiny space: no plan.json beside the samples and no preset with that hash
    assert_usage_error(run("fit", "s.jsonl", "-o", "x.json", cwd=tmp_path), "pass --space")
    bad = make_samples(space, truth, 3)
    bad[1]["ms"]["min"] = -1.0
    write_jsonl(tmp_path / "neg.jsonl", bad)
    assert_usage_error(run("fit", "neg.jsonl", "-o", "x.json", "--space", "space.json", cwd=tmp_path),
                       "neg.jsonl:2", "ms.min is -1.0")
    assert not (tmp_path / "x.json").exists()


def bilinear_table(space, seed=0):
    """A table of the shape real layers have: per-op overhead plus work proportional to cin, cout and cin*cout."""
    rng = np.random.default_rng(seed)
    ch = [np.asarray(c, float) for c in space.choices]
    stem = 0.3 + 0.01 * ch[0]
    head = 0.05 + 0.002 * ch[-1]
    blocks = [rng.uniform(0.02, 0.1) + 0.002 * a[:, None] + 0.001 * b[None, :] + 2e-4 * a[:, None] * b[None, :]
              for a, b in zip(ch, ch[1:])]
    return L.LatencyTable(space, stem, blocks, head)


def test_prior_recovers_a_bilinear_table_from_few_samples(space):
    """Fewer samples than entries: the pull towards each layer's bilinear model fills in what the samples leave loose,
    so held-out predictions beat the prior-free fit (and both entries and the chain stay non-negative)."""
    truth = bilinear_table(space, seed=2)
    train = make_samples(space, truth, 40, noise=0.03, seed=3)
    test = make_samples(space, truth, 300, seed=4)
    lay = L._TableLayout(space)
    ks = space.num_choices
    assert len(train) < lay.n and lay.prior_basis().shape == (lay.n, 2 + sum(a + b for a, b in zip(ks, ks[1:])) + 2)
    plain, _ = L.fit_table(train, space, reg=3.0, prior=0.0)
    table, rep = L.fit_table(train, space)
    assert rep["prior"] in L.PRIOR_GRID and {c["prior"] for c in rep["choices"]} == set(L.PRIOR_GRID)
    assert {c["scale"] for c in rep["choices"]} == set(L.SCALES) and rep["scale"] in L.SCALES
    e_plain, e_prior = L.evaluate(plain, test)["rmse_ms"], L.evaluate(table, test)["rmse_ms"]
    assert e_prior < 0.9 * e_plain  # 0.83 here: with 4 widths a layer the model has 8 coefficients for 16 entries
    assert all(a.min() >= 0 for a in [table.stem, table.head, *table.blocks])


def test_identical_blocks_share_one_table_in_the_prior():
    """Blocks with one signature (same width choices, stride and map sizes) run the same kernels: a device whose
    per-entry structure (a step at one channel pair, not bilinear) is the same in each of them is learnt from few
    samples only when their samples pool. The choice is made on validation data and kept for refits."""
    space = tiny_space(layers=7, levels=5)
    lay = L._TableLayout(space)
    assert lay.groups == [[4, 5, 6]]  # the three stride-1 blocks after the second stride 2
    assert L._TableLayout(tiny_space()).groups == []  # no two blocks alike: the choice is not offered
    ks = space.num_choices
    n_own = lay.prior_basis().shape[1]
    assert lay.prior_basis(shared=True).shape == (lay.n, n_own + ks[3] * ks[4])
    truth = bilinear_table(space, seed=8)
    bumps = np.random.default_rng(9).uniform(0.0, 0.15, (ks[3], ks[4]))  # per-entry structure, shared
    for t in (4, 5, 6):
        truth.blocks[t - 1] = truth.blocks[t - 1] + bumps
    train = make_samples(space, truth, 60, noise=0.002, seed=10)
    val = make_samples(space, truth, 60, noise=0.002, seed=11)
    test = make_samples(space, truth, 300, seed=12)
    table, rep = L.fit_table(train, space, validation=val)
    per_layer, rep0 = L.fit_table(train, space, validation=val, shared=False)
    assert {c["shared"] for c in rep["choices"]} == {False, True} and rep["shared"] and table.fit["shared"]
    assert {c["shared"] for c in rep0["choices"]} == {False} and not rep0["shared"]
    e_shared, e_own = L.evaluate(table, test)["rmse_ms"], L.evaluate(per_layer, test)["rmse_ms"]
    assert e_shared < 0.7 * e_own, (e_shared, e_own)
    back = L.LatencyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.fit["shared"] is True


def test_validation_file_is_brought_to_the_training_reference_level(space):
    """A validation file timed while the device ran 4% faster (its references say so) is scaled to the speed the
    table was fitted at, not to its own median reference, which would leave a 4% systematic error."""
    truth = true_table(space, seed=5)
    train = make_samples(space, truth, 200, seed=6)
    fast = make_samples(space, truth, 50, seed=7)
    for d in fast:
        d["ref_ms"], d["ms"]["min"] = 0.96, d["ms"]["min"] * 0.96
    table, rep = L.fit_table(train, space, validation=fast)
    assert rep["ref_ms"] == 1.0 and table.fit["ref_ms"] == 1.0
    assert rep["validation"]["max_rel_err"] < 1e-2
    assert L.evaluate(table, fast)["max_rel_err"] < 1e-2


def test_relative_scale_is_least_squares_on_relative_residuals(space):
    """scale="relative" weights each row by (mean / y)^2: at reg 0 and prior 0 the fit is the bounded least-squares
    solution of the rows scaled by mean / y (with the tiny anchor and ridge), which lsq_linear computes exactly."""
    truth = true_table(space, seed=11)
    samples = make_samples(space, truth, 80, noise=0.05, seed=12)
    lay = L._TableLayout(space)
    A, y = lay.design(L._indices(space, samples)), L.measured(samples)
    table, rep = L.fit_table(samples, space, reg=0.0, prior=0.0, scale="relative")
    assert rep["scale"] == "relative" and rep["choices"] == []
    sw = np.mean(y) / y
    rows = sp.vstack([sp.diags(sw) @ A, L.ANCHOR * lay.D, L.RIDGE * sp.identity(lay.n)]).tocsr()
    ref = lsq_linear(rows.toarray(), np.r_[sw * y, np.zeros(rows.shape[0] - len(y))], bounds=(0, np.inf),
                     method="bvls", tol=1e-14).x
    idx = L._indices(space, samples)
    assert np.allclose(table.predict_indices(idx), lay.table(ref).predict_indices(idx), rtol=2e-3)
    absolute, _ = L.fit_table(samples, space, reg=0.0, prior=0.0, scale="absolute")
    assert not np.allclose(absolute.predict_indices(idx), table.predict_indices(idx), rtol=2e-3)
    with pytest.raises(L.UsageError, match="unknown scale"):
        L.fit_table(samples, space, scale="log")


def scaled_device(space, table, seed=0):
    """Another device: every term of ``table`` scaled and shifted by its own factors (int8, other kernels)."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.4, 2.5, space.num_layers + 1), rng.uniform(0.0, 0.05, space.num_layers + 1)
    return L.LatencyTable(space, a[0] * table.stem + b[0], [a[i] * blk + b[i] for i, blk in enumerate(table.blocks, 1)],
                          a[-1] * table.head + b[-1])


def test_prior_table_learns_a_new_device_from_few_samples(space, tmp_path):
    """A new device whose terms are the old device's scaled per term: 16 of its samples and the old table as the
    prior predict it within 2% everywhere; the same 16 samples alone cannot (fewer samples than entries). The prior's
    entries travel in the table, so a refit (refine) uses the same model."""
    old = true_table(space, seed=21)
    new = scaled_device(space, old, seed=22)
    train = make_samples(space, new, 16, noise=0.005, seed=23)
    test = make_samples(space, new, 300, seed=24)
    fewshot, rep = L.fit_table(train, space, prior_table=old)
    alone, _ = L.fit_table(train, space)
    assert rep["prior"] in L.PRIOR_TABLE_GRID
    assert L.evaluate(fewshot, test)["max_rel_err"] < 0.02 < 0.1 < L.evaluate(alone, test)["max_rel_err"]
    back = L.LatencyTable.from_json(json.loads(json.dumps(fewshot.to_json())))
    lay = L._TableLayout(space)
    assert np.allclose(lay.vector(L.prior_table_of(back)), lay.vector(old), atol=1e-6)
    assert L.prior_table_of(alone) is None
    # the CLI: the same fit from files, and a table of another network refused in one line
    old.save(tmp_path / "old.json")
    write_jsonl(tmp_path / "new.jsonl", train)
    space.save(tmp_path / "space.json")
    r = run_module("tfwidth.latency", "fit", "new.jsonl", "--space", "space.json", "--prior-table", "old.json",
                   "-o", "t.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "pulled towards old.json" in r.stdout, r.stderr
    assert L.evaluate(L.LatencyTable.load(tmp_path / "t.json"), test)["max_rel_err"] < 0.02
    other = tiny_space(layers=5)
    true_table(other).save(tmp_path / "other.json")
    r = run_module("tfwidth.latency", "fit", "new.jsonl", "--space", "space.json", "--prior-table", "other.json",
                   "-o", "t2.json", cwd=tmp_path, timeout=120)
    assert_usage_error(r, "choices per layer")
    assert not (tmp_path / "t2.json").exists()


def test_validation_reports_the_ladder_against_the_same_networks_timed_twice(space, tmp_path):
    """The uniform networks are in both files (every plan times them first): the fit reports them by themselves,
    against the A/A of exactly those networks (their timings in the two files), beside the random configurations."""
    truth = true_table(space, seed=31)
    ladder = [list(w) for w in space.ladder()]

    def with_ladder(samples, noise, seed):
        rng = np.random.default_rng(seed)
        extra = []
        for w in ladder:
            ms = truth.predict(w) * (1 + noise * rng.standard_normal())
            extra.append(dict(samples[0], widths=w, ms={"min": ms, "median": ms, "mean": ms, "std": 0.0, "count": 20}))
        return [dict(d, index=i) for i, d in enumerate(extra + samples)]
    write_jsonl(tmp_path / "s.jsonl", with_ladder(make_samples(space, truth, 150, noise=0.01, seed=32), 0.01, 33))
    write_jsonl(tmp_path / "v.jsonl", with_ladder(make_samples(space, truth, 40, noise=0.01, seed=34), 0.01, 35))
    space.save(tmp_path / "space.json")
    r = run_module("tfwidth.latency", "fit", "s.jsonl", "--validation", "v.jsonl", "--space", "space.json",
                   "-o", "t.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"uniform networks of the width levels ({len(ladder)}): RMSE" in r.stdout
    assert "x the A/A of the same networks (timed in both files)" in r.stdout
    fit = json.loads((tmp_path / "t.json").read_text())["fit"]
    groups = fit["validation_groups"]
    assert groups["ladder"]["n"] == len(ladder) and groups["random"]["n"] + len(ladder) == fit["validation"]["n"]
    r = run_module("tfwidth.latency", "validate", "t.json", "v.jsonl", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and f"uniform networks of the width levels ({len(ladder)})" in r.stdout, r.stderr


def test_fit_samples_and_validate_table_are_the_cli(space, tmp_path):
    """The fit and validate stages' library functions: the table the fit CLI writes (its entries and fit record),
    the figures it prints, and validate's figures of it."""
    truth = true_table(space)
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "s.jsonl", make_samples(space, truth, 80, noise=0.01))
    write_jsonl(tmp_path / "v.jsonl", make_samples(space, truth, 30, seed=4, noise=0.01))
    r = run("fit", "s.jsonl", "-o", "cli.json", "--space", "space.json", "--validation", "v.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = L.fit_samples(tmp_path / "s.jsonl", tmp_path / "lib.json", space=tmp_path / "space.json",
                        validation=tmp_path / "v.jsonl")
    cli, lib = (json.loads((tmp_path / n).read_text()) for n in ("cli.json", "lib.json"))
    assert lib == json.loads(json.dumps(got.table.to_json()))
    assert cli["stem"] == lib["stem"] and cli["blocks"] == lib["blocks"] and cli["head"] == lib["head"]
    assert cli["fit"] == lib["fit"]
    assert L.format_metrics("validation", got.report["validation"]) in r.stdout
    assert got.statistic == "min" and got.plot is None and got.output == tmp_path / "lib.json"
    assert [g for g, *_ in got.groups] == list(got.report["validation_groups"])
    v = L.validate_table(tmp_path / "lib.json", tmp_path / "v.jsonl")
    assert v.metrics == got.report["validation"] and v.verdict["poor"] == got.verdict["poor"]


def fleet_samples(space, truth, slow, with_refs, n=60):
    """Samples of four identical devices pi-1..pi-4 (their shards: disjoint configurations) where ``slow`` runs 5%
    slower; its reference timings (ref_ms) say so when ``with_refs``, else no sample carries one."""
    kind = {"machine": "aarch64", "cpu": "Cortex-A72", "os": "Linux-6.6-rpi"}
    out = []
    for i in range(4):
        host = f"pi-{i + 1}"
        f = 1.05 if host == slow else 1.0
        for d in make_samples(space, truth, n, seed=10 + i, noise=0.01):
            d["ms"] = {k: v * f if k in ("min", "median", "mean") else v for k, v in d["ms"].items()}
            d["ref_ms"] = 1.0 * f if with_refs else None
            d["device"] = dict(kind, hostname=host)
            out.append(d)
    return out


@pytest.mark.parametrize("with_refs", [True, False])
def test_fit_names_the_device_of_a_fleet_that_runs_slow(space, tmp_path, capsys, with_refs):
    truth = true_table(space)
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "fleet.jsonl", fleet_samples(space, truth, "pi-3", with_refs))
    assert L.main(["fit", str(tmp_path / "fleet.jsonl"), "-o", str(tmp_path / "t.json"),
                   "--space", str(tmp_path / "space.json")]) == 0
    out = capsys.readouterr().out
    named = [line for line in out.splitlines() if line.startswith("device ")]
    assert len(named) == 1 and re.match(r"device pi-3 runs (4\.[89]|5\.[01])% slower than the median device", named[0]), out
    assert ("(its reference timings: +5.0%)" in named[0]) == with_refs
    assert re.search("its reference timings brought its samples to the fleet's speed in this fit$" if with_refs
                     else r"so its speed was fitted with the table \(its timings divided by 1\.0(4[89]|5[01])\)$",
                     named[0]), named[0]
    summary = next(line for line in out.splitlines() if line.startswith("4 devices against the median device"))
    assert summary.endswith("; the drift correction divided each one's speed out" if with_refs else
                            "; each one's speed fitted with the table"), summary
    devices = L.LatencyTable.load(tmp_path / "t.json").fit["devices"]
    assert [d["device"] for d in devices] == ["pi-1", "pi-2", "pi-3", "pi-4"]
    assert [d["samples"] for d in devices] == [60] * 4 and devices[2]["description"] == "aarch64, Cortex-A72, Linux-6.6-rpi"
    assert devices[2]["offset"] == pytest.approx(0.05, abs=0.005)
    assert all(abs(d["offset"]) < 0.005 for d in devices if d["device"] != "pi-3")
    assert [d["corrected"] for d in devices] == ["reference" if with_refs else "joint"] * 4
    assert len(L.LatencyTable.load(tmp_path / "t.json").fit["choices"]) == 12  # the settings scored when chosen
    # the references, or the speeds fitted with the table, brought every sample to the median device's speed: the
    # table is the truth's (a fit of pi-3's timings as they are would be ~1% slow here, as much as the noise)
    t = L.LatencyTable.load(tmp_path / "t.json")
    assert L.evaluate(t, make_samples(space, truth, 50, seed=99), drift=False)["mean_rel_err"] < 0.005


def test_devices_of_one_host_are_its_cores_and_one_device_reports_nothing(space):
    truth = true_table(space)
    rows = make_samples(space, truth, 40)
    for i, d in enumerate(rows):
        d["device"], d["cpus"] = {"machine": "x86_64", "cpu": "EPYC", "hostname": "bench"}, [i % 2]
    table, _ = L.fit_table(rows, space)
    got = L.device_offsets(table, rows)
    assert [d["device"] for d in got] == ["bench cpus 0", "bench cpus 1"]
    assert [d["corrected"] for d in got] == ["reference"] * 2
    assert L.format_offsets(got)[1:] == []  # identical: nobody named
    assert L.device_offsets(table, rows[::2]) == [] and L.format_offsets([]) == []


def test_samples_of_different_kinds_of_device_or_runtime_versions_are_refused(space, tmp_path):
    truth = true_table(space)
    space.save(tmp_path / "space.json")
    a = make_samples(space, truth, 30, device={"machine": "aarch64", "cpu": "Cortex-A72", "os": "Pi OS",
                                               "hostname": "pi4"})
    b = make_samples(space, truth, 30, seed=2, device={"machine": "aarch64", "cpu": "Cortex-A76", "os": "Pi OS",
                                                       "hostname": "pi5"})
    write_jsonl(tmp_path / "mixed.jsonl", a + b)
    r = run("fit", "mixed.jsonl", "-o", "t.json", "--space", "space.json", cwd=tmp_path)
    assert_usage_error(r, "different kinds of device", "'aarch64, Cortex-A72, Pi OS' (pi4, mixed.jsonl:1)",
                       "'aarch64, Cortex-A76, Pi OS' (pi5, mixed.jsonl:31)", "--allow-mixed")
    assert not (tmp_path / "t.json").exists()
    # the validation file of another kind of device is refused the same way
    write_jsonl(tmp_path / "a.jsonl", a)
    write_jsonl(tmp_path / "b.jsonl", b)
    assert_usage_error(run("fit", "a.jsonl", "-o", "t.json", "--space", "space.json", "--validation", "b.jsonl",
                           cwd=tmp_path), "different kinds of device", "Cortex-A76")
    r = run("fit", "mixed.jsonl", "-o", "t.json", "--space", "space.json", "--allow-mixed", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 devices against the median device" in r.stdout
    write_jsonl(tmp_path / "v.jsonl", a + make_samples(space, truth, 5, runtime_version="1.4"))
    assert_usage_error(run("fit", "v.jsonl", "-o", "t.json", "--space", "space.json", cwd=tmp_path),
                       "mix several runtime_version values: 1.2 (v.jsonl:1), 1.4 (v.jsonl:31)", "--allow-mixed")
