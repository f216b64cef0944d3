"""The benchmarks' cache keys and report sentences (tools/): fast, no training, synthetic numbers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import _cache  # noqa: E402


def parts_of(tmp_path, n=1, code="c1"):
    return {"args": {"n": n}, "inputs": {"x": _cache.file_digest(tmp_path / "x.bin")}, "code": code}


def test_cache_reused_only_for_the_same_key(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"abc" * 1000)
    rec = tmp_path / "r.key.json"
    said = []
    assert _cache.load(rec, parts_of(tmp_path), say=said.append) is None and said == []  # first run: silent
    _cache.store(rec, parts_of(tmp_path), {"figure": 1.5})
    assert _cache.load(rec, parts_of(tmp_path), say=said.append) == {"figure": 1.5} and said == []

    assert _cache.load(rec, parts_of(tmp_path, n=2), "fit", say=said.append) is None
    assert said[-1] == "recomputed: fit: args.n changed"
    assert not _cache.check(rec, parts_of(tmp_path, code="c2"), "fit", say=said.append)
    assert said[-1] == "recomputed: fit: code changed"
    (tmp_path / "x.bin").write_bytes(b"abc" * 999 + b"abd")  # same size, one byte different
    assert not _cache.check(rec, parts_of(tmp_path), "fit", say=said.append)
    assert said[-1] == "recomputed: fit: inputs.x changed"
    assert not _cache.check(tmp_path / "none.json", parts_of(tmp_path), "fit", say=said.append, leftover=True)
    assert said[-1] == "recomputed: fit: no record of its inputs"
    assert json.loads(rec.read_text())["parts"]["args"] == {"n": 1}
    assert _cache.describe_change(None, {"a": 1}) == "no record of its inputs"
    assert _cache.describe_change({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 0}) == "b.c, d changed"


def test_code_and_run_digests_follow_their_files(tmp_path, monkeypatch):
    for f in ("tfwidth/space.py", "tfwidth/artifacts.py", "tfwidth/refine.py", "device_profiler/a.py"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x = 1\n")
    monkeypatch.setattr(_cache, "ROOT", tmp_path)
    before = _cache.code_digest("tfwidth/refine.py", "device_profiler")
    assert _cache.code_digest("tfwidth/refine.py", "device_profiler") == before
    (tmp_path / "device_profiler/a.py").write_text("x = 2\n")  # an uncommitted edit invalidates too
    assert _cache.code_digest("tfwidth/refine.py", "device_profiler") != before

    run = tmp_path / "run"
    assert _cache.run_digest(run) is None
    (run / "ckpt").mkdir(parents=True)
    (run / "ckpt" / "ckpt-1.index").write_bytes(b"i1")
    (run / "stats.json").write_text("{}")
    d = _cache.run_digest(run)
    (run / "stats.json").write_text('{"probe": 1}')
    assert _cache.run_digest(run) != d
    assert _cache.dataset_digest("digits") == "digits"
    assert _cache.dataset_digest(f"npz:{run / 'stats.json'}") == _cache.file_digest(run / "stats.json")


def test_relative_paths_never_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cache.relative(tmp_path / "a" / "b.json") == "a/b.json"
    assert _cache.relative("/somewhere/else/cifar10.npz") == "cifar10.npz"


def test_verdicts_follow_the_numbers():
    import bench_e2e
    import bench_latency
    import bench_soak
    assert bench_e2e.verdict(1.2, ">= +1.5") == "fail" and bench_e2e.verdict(1.5, ">= +1.5") == "pass"
    assert bench_e2e.verdict(1.06, "<= 1.05") == "fail" and bench_e2e.verdict(None, ">= 1") == ""
    assert "no other work" in bench_latency.load_sentence(0.9, 1.2, 2)
    assert "other work shared" in bench_latency.load_sentence(0.9, 2.5, 2)
    ok, text = bench_soak.flat_verdict(100 * bench_soak.MIB, 118 * bench_soak.MIB)
    assert ok and text == ("PASS: resident memory 100.0 MiB at the start, 118.0 MiB at the end (1.180x, +18.0 MiB); "
                           "flat means end <= start x 1.1 + 8 MiB = 118.0 MiB")
    ok, text = bench_soak.flat_verdict(100 * bench_soak.MIB, 119 * bench_soak.MIB)
    assert not ok and text.startswith("FAIL")


def refine_record(converged, late):
    return {"rounds": 12, "converged": converged, "tol": 0.03, "added_samples": 40,
            "history": [{"max_abs_err": 0.05, "over_target": late}],
            "answers": [{"widths": [8], "met": i >= late} for i in range(3)]}


def test_refine_sentence_cannot_contradict_the_record():
    import bench_e2e
    ok = bench_e2e.refine_outcome([{"seed": 0, "table": refine_record(True, 0)}])
    assert ok == "In this run every seed's loop converged with every answer timed within its target."
    bad = bench_e2e.refine_outcome([{"seed": 0, "table": refine_record(False, 2)},
                                    {"seed": 1, "table": refine_record(True, 0)}])
    assert "did not" in bad and "every seed's loop converged" not in bad
    assert "seed 0: not converged after 12 round(s), 2 answer(s) left over their target" in bad
    assert "seed 1: converged, every answer within its target" in bad


def test_splice_section_keeps_the_other_sections():
    import bench_e2e
    old = "# Benchmarks\n\n## End-to-end: old\nold numbers\n\n## Solver\nkept\n"
    new = bench_e2e.splice_section(old, "# Benchmarks\n\n## End-to-end: new\nnew numbers\n")
    assert new == "# Benchmarks\n\n## End-to-end: new\nnew numbers\n\n## Solver\nkept\n"


def e2e_seed(work, seed, key, converged, late):
    configs = []
    for mult, tms in ((0.5, 0.2), (0.75, 0.5), (1.0, 0.65)):
        for m, acc in (("uniform", 0.50), ("greedy", 0.49), ("ows", 0.51), ("exact", 0.515)):
            configs.append({"target_mult": mult, "target_ms": tms, "method": m, "run": "ows", "widths": [8, 16],
                            "predicted_ms": tms * 0.98, "measured_ms": tms * 0.99, "export_ms": tms, "aim_ms": tms,
                            "inherited_top1": acc - 0.05, "finetuned_top1": acc, "params": 1e6, "macs": 2e7})
    (work / f"seed{seed}").mkdir(parents=True)
    (work / f"seed{seed}" / "configs.json").write_text(json.dumps(
        {"seed": seed, "configs": configs, "table": refine_record(converged, late), "times": {"train": 60.0},
         "report_key": key, "quiet_load_avg": [0.4, 0.6]}))


def test_e2e_report_from_synthetic_numbers(tmp_path, monkeypatch):
    import bench_e2e
    from tfwidth.space import preset
    work = tmp_path / "e2e"
    work.mkdir()
    (work / "targets.json").write_text(json.dumps({"targets": [{"mult": m, "measured_ms": t} for m, t in
                                                               ((0.5, 0.2), (0.75, 0.5), (1.0, 0.65))]}))
    (work / "table.json").write_text("{}")
    e2e_seed(work, 0, "k1", False, 1)
    e2e_seed(work, 1, "k1", False, 0)
    e2e_seed(work, 2, "other", True, 0)  # another run's arguments: must not be aggregated
    docs = ROOT / "docs" / "benchmarks.md"
    docs_before = docs.read_bytes() if docs.exists() else None
    a = bench_e2e.parser().parse_args(["--data", str(tmp_path / "data" / "cifar10.npz"), "--work", str(work),
                                       "--epochs", "2", "--train-limit", "100", "--eval-limit", "50",
                                       "--batch-size", "32", "--plan-count", "10", "--val-count", "5", "--no-aows"])
    monkeypatch.chdir(tmp_path)
    bench_e2e.write_report(work / "report.md", work, a, preset("mobilenet_v1_cifar"), "k1")
    text = (work / "report.md").read_text()
    assert (work / "benchmarks_e2e.png").exists()
    assert (docs.read_bytes() if docs.exists() else None) == docs_before  # docs only with update_docs
    assert str(tmp_path) not in text and "/work/" not in text
    assert "python tools/bench_e2e.py --data cifar10.npz --work e2e --seed 0 --epochs 2 --train-limit 100 " \
           "--eval-limit 50 --batch-size 32 --plan-count 10 --val-count 5 --no-aows\n" in text
    assert "Seeds: 0, 1 (seeds 2 in e2e were run with other arguments or data and are left out)" in text
    assert "did not reach that for every seed" in text and "every seed's loop converged" not in text
    # at the same target exact - uniform is +1.5 points fine-tuned; the bars are judged at equal latency only
    assert "| exact minus uniform | +1.50 (+1.50, +1.50) | +1.50 (+1.50, +1.50) |" in text
    assert ">= +1.5 (judged at equal latency above) |" in text and ": pass |" not in text
    assert "At equal measured latency, against curves" in text  # no curve in these seeds: the table is empty
    assert "(bar: <= 1.05: pass)" in text


def test_e2e_seeds_kept_from_two_sessions_share_one_report(tmp_path, monkeypatch):
    """--keep: each session's seed (configs, per-image results, its own targets) is copied into one kept directory,
    and the report from that directory aggregates both, naming each seed's targets."""
    import bench_e2e
    from tfwidth.space import preset
    keep = tmp_path / "kept"
    for seed, t05 in ((0, 0.2), (1, 0.21)):
        work = tmp_path / f"session{seed}"
        work.mkdir()
        (work / "targets.json").write_text(json.dumps({"targets": [{"mult": m, "measured_ms": t} for m, t in
                                                                   ((0.5, t05), (0.75, 0.5), (1.0, 0.65))]}))
        (work / "table.json").write_text("{}")
        (work / "space.json").write_text(json.dumps({"name": "mobilenet_v1_cifar"}))
        e2e_seed(work, seed, "k1", True, 0)
        (work / f"seed{seed}" / "preds").mkdir()
        (work / f"seed{seed}" / "preds" / "a.npz").write_bytes(b"x" * seed)
        bench_e2e.keep(work, seed, keep)
    assert sorted(p.name for p in keep.iterdir()) == ["seed0", "seed1", "space.json", "table.json", "targets.json"]
    assert (keep / "seed1" / "preds" / "a.npz").read_bytes() == b"x"
    assert json.loads((keep / "targets.json").read_text())["targets"][0]["measured_ms"] == 0.2  # the first kept
    a = bench_e2e.parser().parse_args(["--data", "cifar10.npz", "--work", str(keep), "--epochs", "2", "--no-aows"])
    monkeypatch.chdir(tmp_path)
    bench_e2e.write_report(keep / "report.md", keep, a, preset("mobilenet_v1_cifar"), "k1")
    text = (keep / "report.md").read_text()
    assert "Seeds: 0, 1." in text
    assert ("timed in each seed's own session: seed 0: 0.5x = 0.200 ms, 0.75x = 0.500 ms, 1.0x = 0.650 ms; "
            "seed 1: 0.5x = 0.210 ms") in text


def test_e2e_keep_refuses_a_file_or_another_space_before_any_work(tmp_path, capsys):
    import bench_e2e
    from tfwidth.space import preset
    _small_npz(tmp_path / "d.npz", side=8)
    (tmp_path / "afile").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "space.json").write_text(json.dumps({"space_hash": "0123456789abcdef"}))
    for dest, says in ((tmp_path / "afile", "not a directory"),
                       (other, f"holds results of space 0123456789abcdef, this run's is "
                               f"{preset('mobilenet_v1_cifar').space_hash}")):
        with pytest.raises(SystemExit) as e:
            bench_e2e.main(["--data", str(tmp_path / "d.npz"), "--work", str(tmp_path / "w"), "--keep", str(dest)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and err.count("\n") == 1
        assert not (tmp_path / "w").exists()  # refused before anything was written


def test_soak_compares_artefacts_without_timing_fields(tmp_path):
    import bench_soak
    a, b = tmp_path / "a", tmp_path / "b"
    for d, secs, acc in ((a, 1.0, 0.5), (b, 2.0, 0.5)):
        (d / "run").mkdir(parents=True)
        (d / "widths.json").write_text(json.dumps({"widths": [8], "seconds": secs, "run": str(d / "run")}))
        (d / "table.json").write_text(json.dumps({"fit": {"seconds": secs, "rmse": 0.1}}))
        (d / "run" / "stats.json").write_text(json.dumps({"probe_info": {"seconds": secs, "configs": 5}}))
        (d / "model_fp32.report.json").write_text(json.dumps({"tflite": {"top1": acc}, "keras": {"top1": acc}}))
    bench_soak.weights_diff = lambda x, y: "equal (0 tensors)"
    assert set(bench_soak.compare(a, b).values()) == {"equal", "equal (0 tensors)"}
    (b / "table.json").write_text(json.dumps({"fit": {"seconds": 1.0, "rmse": 0.2}}))
    assert bench_soak.compare(a, b)["table.json"] == "different (first at fit.rmse: 0.1 vs 0.2)"


def test_soak_needs_data_for_the_kill_part(tmp_path, capsys):
    import bench_soak
    with pytest.raises(SystemExit) as e:
        bench_soak.main(["--work", str(tmp_path), "--kill"])
    assert e.value.code == 2 and "--kill needs --data PATH" in capsys.readouterr().err


def test_export_bars_follow_the_numbers():
    import bench_export

    def rep(top1, keras=None, logit=1e-6):
        return {"tflite": {"top1": top1}, "keras": {"top1": top1 if keras is None else keras},
                "agreement": {"max_abs_logit_diff": logit}}
    got = bench_export.bars({"fp32": rep(0.60), "int8": rep(0.588), "qat": rep(0.604)})
    assert [(name.split()[0], ok) for name, ok, _ in got] == [("fp32", True), ("int8", False), ("qat", True)]
    assert got[1][2] == "-1.20 points"
    got = bench_export.bars({"fp32": rep(0.60, keras=0.602)})
    assert got[0][1] is False and [ok for _, ok, _ in got[1:]] == [None, None]


def test_kill_schedule_spreads_over_the_run():
    import bench_soak
    s = bench_soak.kill_schedule(0, 5, 600.0)
    assert s == bench_soak.kill_schedule(0, 5, 600.0) and len(s) == 5 and min(s) >= 3.0
    assert 0.03 * 600 <= sum(s) <= 0.9 * 600 + 5 * 3.0  # the last kill before 90% of the uninterrupted run


def _small_npz(path, n=24, m=9, classes=3, side=4):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), y_train=np.arange(n) % classes,
                  x_test=rng.integers(0, 256, (m, side, side, 3), dtype=np.uint8), y_test=np.arange(m) % classes)
    np.savez(path, **arrays)
    return arrays


def test_npz_to_folder_round_trip(tmp_path, capsys):
    import tensorflow as tf
    import npz_to_folder
    from tfwidth.data import load_data
    from tfwidth.space import tiny_space
    arrays = _small_npz(tmp_path / "d.npz")
    out = tmp_path / "f"
    assert npz_to_folder.main(["--data", str(tmp_path / "d.npz"), "--out", str(out), "--resolution", "8",
                               "--train", "20"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["0", "1", "2"]
    assert not (tmp_path / "f.partial").exists()
    # each file is the npz image resized as tfwidth.data resizes, under its label's folder
    want = tf.cast(tf.round(tf.image.resize(tf.cast(arrays["x_train"][:20], tf.float32), (8, 8), antialias=True)),
                   tf.uint8).numpy()
    for k in (0, 7, 19):
        f = out / "train" / str(arrays["y_train"][k]) / f"{k:02d}.png"
        np.testing.assert_array_equal(tf.io.decode_png(f.read_bytes()).numpy(), want[k])
    d = load_data(f"folder:{out}", tiny_space(resolution=8, classes=3), 4)
    assert (d.num_train, d.num_eval) == (20, 9)
    _, ye = d.eval_arrays()
    assert sorted(ye.tolist()) == sorted(arrays["y_test"].tolist())
    # the same build again: nothing to do; another build onto it: refused in one line, the folder untouched
    assert npz_to_folder.main(["--data", str(tmp_path / "d.npz"), "--out", str(out), "--resolution", "8",
                               "--train", "20"]) == 0
    assert "already holds this build" in capsys.readouterr().out
    digest = _cache.dataset_digest(f"folder:{out}")
    with pytest.raises(SystemExit) as e:
        npz_to_folder.main(["--data", str(tmp_path / "d.npz"), "--out", str(out), "--resolution", "16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "exists and is not this build" in err
    assert _cache.dataset_digest(f"folder:{out}") == digest
    # the folder's digest follows its files' names and bytes
    f = out / "val" / "0" / "0.png"
    f.rename(f.with_name("9.png"))
    assert _cache.dataset_digest(f"folder:{out}") != digest
    f.with_name("9.png").rename(f)
    assert _cache.dataset_digest(f"folder:{out}") == digest
    f.write_bytes(f.read_bytes() + b"\0")
    assert _cache.dataset_digest(f"folder:{out}") != digest


def test_e2e_validation_split_follows_the_training_subset(tmp_path, capsys):
    import bench_e2e
    from tfwidth.space import tiny_space
    arrays = _small_npz(tmp_path / "d.npz", side=8)
    a = bench_e2e.parser().parse_args(["--data", str(tmp_path / "d.npz"), "--train-limit", "12", "--val-images", "8",
                                       "--batch-size", "4"])
    data = bench_e2e.load_bench_data(a, tiny_space(resolution=8, classes=3))
    assert data.num_train == 12 and data.holdout == 8
    x = np.concatenate([b[0] for b in data.holdout_batches()])
    np.testing.assert_allclose(x, arrays["x_train"][12:20] / 127.5 - 1, atol=1e-6)
    a.val_images = 16
    with pytest.raises(SystemExit) as e:
        bench_e2e.load_bench_data(a, tiny_space(resolution=8, classes=3))
    assert e.value.code == 2 and "exceed the 24 training images" in capsys.readouterr().err


def test_e2e_folder_run_names_its_data_and_keeps_its_own_docs_section(tmp_path):
    import bench_e2e
    from tfwidth.space import preset
    a = bench_e2e.parser().parse_args(["--data", f"folder:{tmp_path / 'cifar10_64'}", "--preset", "mobilenet_v1",
                                       "--resolution", "64", "--work", str(tmp_path / "w")])
    assert bench_e2e.command(a, 1) == ("python tools/bench_e2e.py --data folder:cifar10_64 --work w --seed 1 "
                                       "--preset mobilenet_v1 --resolution 64")
    assert bench_e2e.bench_space(a).space_hash == preset("mobilenet_v1", resolution=64, classes=10).space_hash
    npz = bench_e2e.parser().parse_args(["--data", "cifar10.npz"])
    docs = "# Benchmarks\n\n## End-to-end through folder: older\nold folder\n\n## End-to-end: npz\nold cifar\n\n" \
           "## Latency model\nlat\n"
    text = "# Benchmarks\n\n" + bench_e2e.section_marker(a) + ": folder\nnew\n"
    out = bench_e2e.splice_section(docs, text, bench_e2e.section_marker(a))
    assert "old cifar" in out and "new" in out and "lat" in out and "old folder" not in out
    again = bench_e2e.splice_section(out, "# Benchmarks\n\n## End-to-end: npz\nnew cifar\n",
                                     bench_e2e.section_marker(npz))
    assert "old cifar" not in again and "new cifar" in again and ": folder\nnew" in again


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_bench_solve_synthetic_table_of_any_architecture(name):
    """The synthetic latency terms carry every MAC of the network (so latency ~ MACs) and fit the table's layout."""
    import bench_solve
    from tfwidth.space import preset
    space = preset(name)
    rng = np.random.default_rng(1)
    terms = space.architecture.latency_terms(space)
    macs = bench_solve.term_macs(space)
    for _ in range(5):
        w = space.random_widths(rng)
        idx = space.to_indices(w)
        got = sum(float(m[tuple(idx[v] for v in t.variables)]) for m, t in zip(macs, terms))
        assert got == pytest.approx(space.macs(w), rel=1e-12)
    space, costs, table = bench_solve.synthetic(0, preset_name=name)
    assert len(costs) == space.num_layers and len(table.terms) == len(terms)
    ms = table.predict(space.uniform(1.0))
    assert 20 < ms < 35  # ~25 ms plus the overheads, whatever the noise


def test_bench_latency_sets_follow_the_preset():
    import types
    import bench_latency
    from tfwidth.space import preset
    a = types.SimpleNamespace(quick=True, resolutions=[32, 64], fewshot=False, preset="mobilenet_v2_cifar")
    assert [s["space_hash"] for s in bench_latency.device_sets(a)] == [
        preset("mobilenet_v2_cifar", resolution=r).space_hash for r in (32, 64)]


def test_bench_exact_compares_with_a_revision_on_the_same_targets(capsys):
    """Against this checkout's own HEAD the two solvers are the same code (in a clean clone): same answers, every
    line says so."""
    import bench_exact
    if not (Path(bench_exact.ROOT) / ".git").exists():
        pytest.skip("not a git checkout")
    assert bench_exact.main(["--preset", "mobilenet_v1", "--points", "2", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith("target")]
    assert len(lines) == 2 and all("objective new - old +0.000000" in l and "other widths" not in l for l in lines)
    from tfwidth.errors import UsageError
    with pytest.raises(UsageError, match="cannot read tfwidth/mrf.py at revision 'no-such-rev'"):
        bench_exact.load_revision("no-such-rev")


def test_e2e_plot_holds_another_architectures_run(tmp_path, monkeypatch):
    """--plot-with: the report's plot draws the other work directory's answers and uniform curve beside this run's,
    each labelled with its space's name; a directory with no evaluated seed is refused in one line."""
    import bench_e2e
    import matplotlib.axes
    from tfwidth.space import preset
    works = {}
    for name in ("mobilenet_v1_cifar", "mobilenet_v2_cifar"):
        w = tmp_path / name
        w.mkdir()
        (w / "targets.json").write_text(json.dumps({"targets": [{"mult": m, "measured_ms": t} for m, t in
                                                                ((0.5, 0.2), (0.75, 0.5), (1.0, 0.65))]}))
        (w / "table.json").write_text("{}")
        preset(name).save(w / "space.json")
        e2e_seed(w, 0, "k1", True, 0)
        works[name] = w
    labels = []
    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda self, *x, **kw: labels.append(kw.get("label")) or real(self, *x, **kw))
    v1 = works["mobilenet_v1_cifar"]
    a = bench_e2e.parser().parse_args(["--data", str(tmp_path / "cifar10.npz"), "--work", str(v1), "--no-aows",
                                       "--plot-with", str(works["mobilenet_v2_cifar"])])
    monkeypatch.chdir(tmp_path)
    bench_e2e.write_report(v1 / "report.md", v1, a, preset("mobilenet_v1_cifar"), "k1")
    assert (v1 / "benchmarks_e2e.png").exists()
    assert {"mobilenet_v1_cifar: exact", "mobilenet_v2_cifar: exact", "mobilenet_v2_cifar: uniform"} <= set(labels)
    a.plot_with = [str(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        bench_e2e.write_report(v1 / "report.md", v1, a, preset("mobilenet_v1_cifar"), "k1")
    assert e.value.code == 2


def test_bench_spacing_compares_the_same_networks_paired(tmp_path, capsys):
    import bench_spacing
    d = np.array([0.01, 0.02, 0.03, 0.20, 0.05])
    assert bench_spacing.bootstrap_median_gap(d, d, 200) == (0.0, 0.0, 0.0)
    gap, lo, hi = bench_spacing.bootstrap_median_gap(d / 2, d, 500)
    assert gap == pytest.approx(-0.015) and lo <= gap <= hi < 0
    s = bench_spacing.summary(np.array([0.01, 0.04, 0.06, 0.10]))
    assert (s["n"], s["median"], s["within_5pct"]) == (4, pytest.approx(0.05), 0.5)
    recs = [{"kind": "reference", "time": "2026-12-07T19:00:00+00:00"}, {"kind": "sample", "time": None},
            {"kind": "noise", "time": "2026-12-07T19:01:05+00:00"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert bench_spacing.wall_seconds(tmp_path / "s.jsonl") == 65.0
    from tfwidth.errors import run_cli
    assert run_cli(bench_spacing.main, ["--workdir", str(tmp_path / "w"), "--spacings", "0,-3"]) == 2
    assert "--spacings '0,-3' should be comma-separated non-negative numbers" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing written for a bad argument
