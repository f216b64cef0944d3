"""tfwidth.latency: fit on synthetic samples from a known table, sample-file checks, CLI errors."""
import json
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
    lay = L._Layout(space)
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
    lay = L._Layout(space)
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
    lay = L._Layout(space)
    ks = space.num_choices
    assert len(train) < lay.n and lay.prior_basis().shape == (lay.n, 2 + sum(a + b for a, b in zip(ks, ks[1:])) + 2)
    plain, _ = L.fit_table(train, space, reg=3.0, prior=0.0)
    table, rep = L.fit_table(train, space)
    assert rep["prior"] in L.PRIOR_GRID and {c["prior"] for c in rep["choices"]} == set(L.PRIOR_GRID)
    assert {c["scale"] for c in rep["choices"]} == set(L.SCALES) and rep["scale"] in L.SCALES
    e_plain, e_prior = L.evaluate(plain, test)["rmse_ms"], L.evaluate(table, test)["rmse_ms"]
    assert e_prior < 0.9 * e_plain  # 0.83 here: with 4 widths a layer the model has 8 coefficients for 16 entries
    assert all(a.min() >= 0 for a in [table.stem, table.head, *table.blocks])


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
