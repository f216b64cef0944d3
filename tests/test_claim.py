"""The claim at equal measured latency (tools/_claim.py, tools/bench_e2e.py's claim): interpolation on the curve,
the paired bootstrap, and the report's comparison from per-image files, against hand-computed values."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import _claim  # noqa: E402


def test_curve_interpolates_in_log_latency_and_extends_its_end_segments():
    y = [np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([1.0, 1.0])]
    curve = list(zip([4.0, 1.0, 2.0], [y[2], y[0], y[1]]))  # any order
    v, inside = _claim.at_latency(curve, 2.0)
    assert inside and np.allclose(v, y[1])  # on a point: that point
    v, inside = _claim.at_latency(curve, np.sqrt(2.0))  # half-way between 1 and 2 ms in log latency
    assert inside and np.allclose(v, [0.5, 0.0])
    v, inside = _claim.at_latency(curve, 8.0)  # one segment beyond 4 ms: 2 * y(4) - y(2)
    assert not inside and np.allclose(v, [1.0, 2.0])
    with pytest.raises(ValueError, match="two points of different latency"):
        _claim.at_latency([(1.0, y[0]), (1.0, y[1])], 1.0)


def test_duplicate_latencies_on_the_curve_still_interpolate():
    curve = [(1.0, np.zeros(3)), (2.0, np.ones(3)), (2.0, np.ones(3)), (4.0, np.full(3, 2.0))]
    for ms, want in ((2.0, 1.0), (np.sqrt(8.0), 1.5), (np.sqrt(2.0), 0.5)):
        assert np.allclose(_claim.at_latency(curve, ms)[0], want)


def test_difference_is_accuracy_minus_the_interpolated_accuracy():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random(1000) < p for p in (0.5, 0.6, 0.8))
    d, inside = _claim.difference(c, np.sqrt(2.0), [(1.0, a), (2.0, b)])
    assert inside and d.mean() == pytest.approx(c.mean() - (a.mean() + b.mean()) / 2)


def test_best_uniform_that_fits_is_the_most_accurate_point_no_slower_even_where_the_curve_dips():
    # the narrowest network beats the next two (as the sandwich rule's smallest did on CIFAR-10)
    acc = {1.0: 0.40, 2.0: 0.38, 3.0: 0.39, 4.0: 0.45}
    curve = [(ms, np.arange(100) < a * 100) for ms, a in acc.items()]
    for ms, want, fits in ((0.5, 0.40, False), (1.0, 0.40, True), (2.9, 0.40, True), (3.5, 0.40, True),
                           (4.0, 0.45, True), (9.0, 0.45, True)):
        v, inside = _claim.best_within(curve, ms)
        assert inside == fits and v.mean() == pytest.approx(want)
    # where the interpolation reads 0.385 at 2.5 ms, the strict reading takes the 1 ms network's 0.40
    y = np.arange(100) < 39
    assert _claim.difference(y, 2.5, curve, "best")[0].mean() == pytest.approx(-0.01)
    assert _claim.difference(y, np.sqrt(6.0), curve)[0].mean() == pytest.approx(0.39 - 0.385)
    assert _claim.best_index([2.0, 1.0], [0.5, 0.5], 3.0) == (1, True)  # a tie goes to the faster network
    with pytest.raises(ValueError, match="'interpolated' or 'best'"):
        _claim.difference(y, 2.5, curve, "envelope")


def test_bootstrap_of_a_constant_is_exact_and_paired_draws_cancel_shared_noise():
    s = _claim.bootstrap([np.full(500, 0.02), np.full(500, 0.04)])
    assert s["mean"] == pytest.approx(0.03) and s["lo"] == pytest.approx(0.03) and s["hi"] == pytest.approx(0.03)
    rng = np.random.default_rng(1)
    a = (rng.random(5000) < 0.6).astype(float)
    b = a.copy()
    b[:50] = 1.0 - b[:50]  # the two networks disagree on 50 images only
    paired = _claim.bootstrap([b - a])
    assert paired["hi"] - paired["lo"] < 0.01  # an unpaired interval would be ~0.04 wide
    unpaired = np.std(a) * np.sqrt(2 / len(a)) * 2 * 1.96
    assert unpaired > 3 * (paired["hi"] - paired["lo"])
    s = _claim.bootstrap([(rng.random(4000) < 0.5).astype(float)], seed=3)
    half = 1.96 * 0.5 / np.sqrt(4000)
    assert s["hi"] - s["lo"] == pytest.approx(2 * half, rel=0.15) and s["lo"] < s["mean"] < s["hi"]
    assert _claim.above({"lo": 0.016}, 1.5) and not _claim.above({"lo": 0.014}, 1.5)


def _write_preds(path: Path, correct: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, space_hash="x", widths=np.zeros(1), correct=np.packbits(correct), count=len(correct))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def test_claim_compares_each_answer_with_the_curve_at_its_own_latency(tmp_path):
    import bench_e2e
    n = 1000
    rng = np.random.default_rng(0)
    seeds = []
    for seed in (0, 1):
        sd = tmp_path / f"seed{seed}"
        curve, configs = [], []
        for k, (mult, ms, acc) in enumerate(((0.5, 1.0, 0.50), (0.75, 2.0, 0.60), (1.0, 4.0, 0.70))):
            y = np.zeros(n, bool)
            y[rng.permutation(n)[:int(acc * n)]] = True
            _write_preds(sd / f"preds/u{k}.npz", y)
            curve.append({"mult": mult, "measured_ms": ms, "preds": f"preds/u{k}.npz"})
            configs.append({"method": "uniform", "target_mult": mult, "measured_ms": ms, "preds": f"preds/u{k}.npz",
                            "predicted_ms": ms, "val_delta": 0.3, "predicted_delta": 0.2})
        # exact at the 0.75x target: 0.64 at sqrt(8) ms, where the curve reads 0.65: -1 point at equal latency,
        # although it beats the uniform network of its target (0.60) by +4
        y = np.zeros(n, bool)
        y[:640] = True
        _write_preds(sd / "preds/e.npz", y)
        configs.append({"method": "exact", "target_mult": 0.75, "measured_ms": np.sqrt(8.0), "preds": "preds/e.npz",
                        "predicted_ms": 2.0, "val_delta": 0.25, "predicted_delta": 0.1, "inherited_top1": 0.5,
                        "finetuned_top1": 0.64})
        seeds.append({"seed": seed, "configs": configs, "curve": curve})
    cl = bench_e2e.claim(tmp_path, seeds)
    row = next(r for r in cl["rows"] if r["label"] == "exact - uniform curve")
    assert row["mean"] == pytest.approx(-0.01) and row["per_seed"] == {0: pytest.approx(-0.01), 1: pytest.approx(-0.01)}
    assert row["count"] == 2 and row["outside"] == 0 and row["lo"] < -0.01 < row["hi"]
    ans = [a for a in cl["answers"] if a["method"] == "exact"]
    assert len(ans) == 2 and ans[0]["gain_predicted"] == pytest.approx(0.1) and ans[0]["gain_measured"] == pytest.approx(0.05)
    assert ans[0]["target_ms"] == 2.0
    assert "not met" in bench_e2e.claim_verdict(row)
    assert bench_e2e.claim_verdict({"bar": 1.5, "lo": 0.016, "mean": 0.02}).endswith("met (interval above the bar)")
    assert "mean above the bar, interval not, above 0" in bench_e2e.claim_verdict({"bar": 1.5, "lo": 0.005,
                                                                                   "mean": 0.02})
    # the strict reading: the most accurate uniform network no slower than sqrt(8) ms is the 2 ms one (0.60)
    best = next(r for r in cl["rows"] if r["label"] == "exact - best uniform that fits")
    assert best["mean"] == pytest.approx(0.04) and ans[0]["best_uniform"] == 0.75
    text = "\n".join(bench_e2e.claim_lines(cl, seeds))
    assert "| exact - uniform curve | -1.00 |" in text
    assert "| exact - best uniform that fits | +4.00 |" in text and "| +4.00 (0.75x) |" in text


def test_report_renders_the_claim_and_the_curve(tmp_path, monkeypatch):
    import json
    import bench_e2e
    from tfwidth.space import preset
    work = tmp_path / "e2e"
    n = 400
    targets = [{"mult": 0.5, "measured_ms": 1.0}, {"mult": 1.0, "measured_ms": 2.0}]
    (work).mkdir()
    (work / "targets.json").write_text(json.dumps({"targets": targets}))
    (work / "table.json").write_text("{}")
    base = {"params": 1, "macs": 1, "widths": [8], "export_ms": None, "predicted_ms": 1.0, "inherited_top1": 0.4,
            "val_delta": 0.2, "predicted_delta": 0.1, "pass_aa": 0.01}
    for seed in (0, 1):
        sd = work / f"seed{seed}"
        curve, configs = [], []
        for k, (m, ms, acc) in enumerate(((0.5, 1.0, 0.5), (1.0, 2.0, 0.6))):
            y = np.arange(n) < acc * n
            _write_preds(sd / f"preds/u{k}.npz", y)
            curve.append(dict(base, mult=m, measured_ms=ms, finetuned_top1=acc, preds=f"preds/u{k}.npz"))
            configs.append(dict(base, method="uniform", target_mult=m, target_ms=ms, measured_ms=ms,
                                finetuned_top1=acc, preds=f"preds/u{k}.npz"))
            _write_preds(sd / f"preds/x{k}.npz", np.arange(n) < (acc + 0.02) * n)
            configs.append(dict(base, method="exact", target_mult=m, target_ms=ms, measured_ms=ms,
                                finetuned_top1=acc + 0.02, export_pass_ms=ms * 1.01, preds=f"preds/x{k}.npz"))
        (sd / "configs.json").write_text(json.dumps({"seed": seed, "configs": configs, "curve": curve,
                                                     "report_key": "k"}))
    a = bench_e2e.parser().parse_args(["--data", "cifar10.npz", "--work", str(work), "--no-aows"])
    monkeypatch.chdir(tmp_path)
    bench_e2e.write_report(work / "report.md", work, a, preset("mobilenet_v1_cifar"), "k")
    text = (work / "report.md").read_text()
    # +2 points on 400 images is 8 images per answer: the interval says so, and the bar is not called met
    row = next(line for line in text.splitlines() if line.startswith("| exact - uniform curve | +2.00 | [+1."))
    assert row.endswith("| +2.00, +2.00 | 0.5x +2.00, 1.0x +2.00 | 0 of 4 | >= +1.5: not met (mean above the bar, "
                        "interval not, above 0) |")
    assert "| 0.5x | 1.000 | 1.000 | 40.00 (40.00, 40.00) | 50.00 (50.00, 50.00) |" in text
    assert "worst 1.010x (seed 0, 0.5x, exact; bar <= 1.05: met)" in text
    assert "median 1.0%" in text
