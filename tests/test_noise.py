"""A busy device is noticed (issue 16): the profiler measures its own noise and re-times noisy windows, every samples
reader tolerates a partial last line, a second plan cannot be appended to an --out, the template's sha256 is required,
artefacts are written without touching the umask, and the fit's verdict stops the pipeline on a poor table."""
import inspect
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import tfwidth  # noqa: F401
import tfwidth.latency as L
from conftest import assert_usage_error, run_module
from device_profiler import samples as dsamples
from device_profiler.session import NoiseCheck, profile
from device_profiler.errors import UsageError as DeviceUsageError
from tfwidth.artifacts import atomic_write_bytes, write_json
from tfwidth.space import tiny_space

SPACE = tiny_space()


# ---- the profiler's noise check, on a fake device ------------------------------------------------------------------
class FakeSession:
    """Times every configuration at sum(widths) us, slowed by ``factor`` for the calls in ``busy`` (call numbers):
    a device that another job slows down for a while. The interface of device_profiler.session.Session."""

    def __init__(self, busy=(), factor=1.3):
        self.maker = SimpleNamespace(manifest={"space_hash": SPACE.space_hash, "format": "fp32"})
        self.invoke_s, self.calls, self.busy, self.factor = 0.0, [], set(busy), factor

    def record(self, kind, index, widths, ref_ms):
        v = sum(widths) / 1000.0 * (self.factor if len(self.calls) in self.busy else 1.0)
        self.calls.append((kind, index))
        ms = {"min": v, "median": v, "mean": v, "std": 0.0, "count": 3}
        return {"kind": kind, "index": index, "space_hash": SPACE.space_hash, "widths": [int(w) for w in widths],
                "status": "ok", "error": None, "ms": ms, "warmup_runs": 1, "runtime": "fake", "threads": 1,
                "format": "fp32", "ref_ms": v if kind == "reference" else ref_ms}


def plan_of(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"kind": "plan", "space_hash": SPACE.space_hash, "reference": list(SPACE.max_widths),
            "configs": [list(SPACE.random_widths(rng)) for _ in range(n)]}


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_window_timed_while_the_device_was_busy_is_timed_again_and_said_so(tmp_path):
    plan, out, said = plan_of(15), tmp_path / "s.jsonl", []
    # calls: 0 reference, 1-5 samples 0-4, 6 reference, 7-11 samples 5-9, 12 reference: the second window and its
    # closing reference run 30% slow; the re-timing (13 reference, 14-18 samples 5-9, 19 reference) is quiet
    session = FakeSession(busy=range(7, 13))
    r = profile(session, plan, str(out), reference_every=5, progress=False,
                noise=NoiseCheck(threshold=0.05, repeat_every=0, retries=2, budget=10.0), say=said.append)
    assert (r["timed"], r["retimed_windows"], r["noisy_windows"]) == (15, 1, 0)
    assert len(said) == 1 and said[0].startswith("noise: samples 5-9: reference drift 30.0% > 5%; re-timed 1x, "
                                                 "kept attempt 1 (drift 0.0%)"), said
    assert session.calls[13:20] == [("reference", -1)] + [("sample", i) for i in range(5, 10)] + [("reference", -1)]
    recs = records(out)
    got = [d for d in recs if d["kind"] == "sample"]
    assert [d["index"] for d in got] == list(range(15))  # each sample once: the busy attempt was never written
    for d in got:
        assert d["ms"]["min"] == pytest.approx(sum(d["widths"]) / 1000.0)  # every kept timing is a quiet one
        assert d["retimed"] == (1 if 5 <= d["index"] <= 9 else 0)
        assert d["window"]["noisy"] is False and d["plan"] == dsamples.plan_fingerprint(plan)
    assert [d["window"]["drift"] for d in got[5:10]] == [0.0] * 5
    discarded = [d for d in recs if d.get("discarded")]
    assert len(discarded) == 1 and discarded[0]["ms"]["min"] == pytest.approx(1.3 * sum(SPACE.max_widths) / 1000)
    # in file order each kept sample follows the reference it was corrected with
    last_ref = None
    for d in recs:
        if d["kind"] == "reference":
            last_ref = d["ms"]["min"]
        elif d["kind"] == "sample":
            assert d["ref_ms"] == last_ref
    noise = recs[-1]
    assert noise["kind"] == "noise" and noise["widths"] is None and noise["ms"] is None
    assert noise["retimed_samples"] == 5 and noise["reference_drift"] == [0.0, 0.0] and noise["repeats"] == 0
    assert len(L.load_samples(out)) == 15  # the fit reads the new records as before


def test_a_kept_first_attempt_reads_as_unpaired(tmp_path):
    """Window 2's closing reference runs slow, and so does its re-timing's: the first attempt is kept, and its start
    (window 1's end) is already in the file, so the re-timing's discarded references follow it. Readers skip them:
    every sample still pairs with the latest kept reference, and the refinement reads the protocol as unpaired (it
    once read it as paired and timed its candidates beside the reference, which biased a quickstart by 1.18x)."""
    from tfwidth import refine
    plan, out = plan_of(15), tmp_path / "s.jsonl"
    r = profile(FakeSession(busy={12, 19}), plan, str(out), reference_every=5, progress=False,
                noise=NoiseCheck(threshold=0.05, repeat_every=0, retries=1, budget=10.0), say=lambda m: None)
    assert r["retimed_windows"] == 2  # window 3 too: it starts at window 2's slow end, and its re-timing is quiet
    recs = records(out)
    refs = [d.get("discarded", False) for d in recs if d["kind"] == "reference"]
    assert refs[:4] == [False, False, True, True]  # window 1's start and end, then the re-timing's two
    last_ref = None
    for d in recs:
        if d["kind"] == "reference" and not d.get("discarded"):
            last_ref = d["ms"]["min"]
        elif d["kind"] == "sample":
            assert d["ref_ms"] == last_ref
    proto = refine.sample_protocol(out)
    assert proto["paired"] is False
    # a resume goes on at the latest kept reference's level, not a discarded one's
    kept = [d for d in recs if d["kind"] == "reference" and not d.get("discarded")]
    assert dsamples.recover(str(out), SPACE.space_hash)[1] == pytest.approx(kept[-1]["ms"]["min"])


def test_a_window_that_stays_noisy_is_kept_and_said_so(tmp_path):
    plan, out, said = plan_of(10), tmp_path / "s.jsonl", []
    session = FakeSession(busy=range(7, 1000))  # busy from the second window on, through every re-timing
    r = profile(session, plan, str(out), reference_every=5, progress=False,
                noise=NoiseCheck(threshold=0.05, repeat_every=0, retries=2, budget=10.0), say=said.append)
    assert (r["retimed_windows"], r["noisy_windows"]) == (1, 1)
    assert len(said) == 1 and "re-timed 2x" in said[0] and "the device is busy or throttling" in said[0]
    got = [d for d in records(out) if d["kind"] == "sample"]
    assert [d["index"] for d in got] == list(range(10))
    assert all(d["window"]["noisy"] for d in got[5:]) and not any(d["window"]["noisy"] for d in got[:5])
    assert dsamples.noise_summary(records(out))["noisy_samples"] == 5


def test_repeats_are_recorded_and_summarised(tmp_path):
    plan, out = plan_of(12), tmp_path / "s.jsonl"
    session = FakeSession()
    r = profile(session, plan, str(out), reference_every=5, progress=False,
                noise=NoiseCheck(threshold=0.05, repeat_every=4, retries=2, budget=10.0), say=lambda m: None)
    recs = records(out)
    reps = [d for d in recs if d["kind"] == "repeat"]
    assert r["repeats"] == len(reps) == 3  # after the 4th, 8th and 12th sample
    by_index = {d["index"]: d for d in recs if d["kind"] == "sample"}
    for d in reps:
        assert d["widths"] == by_index[d["index"]]["widths"] and d["run"] == by_index[d["index"]]["run"]
    noise = recs[-1]
    assert noise["repeats"] == 3 and noise["repeat_rel_diff_median"] == 0.0 and noise["repeat_rmse_ms"] == 0.0
    # a repeat twice as slow, corrected by its own reference: the summary sees the difference
    reps[0]["ms"] = dict(reps[0]["ms"], min=2 * reps[0]["ms"]["min"])
    s = dsamples.noise_summary([d for d in recs if d is not noise])
    assert s["repeat_rel_diff_p90"] == pytest.approx(2 / 3) and s["repeat_rel_diff_median"] == 0.0
    # a second run in the same process and second (tfwidth.pipeline's two profile stages) is another run: its
    # repeats are never matched with the first run's samples when files are pooled
    profile(FakeSession(), plan, str(tmp_path / "v.jsonl"), reference_every=5, progress=False,
            noise=NoiseCheck(repeat_every=4), say=lambda m: None)
    assert {d["run"] for d in records(tmp_path / "v.jsonl")}.isdisjoint({d["run"] for d in recs})


class SpeedSession(FakeSession):
    """FakeSession whose speed is a function of the call number: ``speed(call) -> factor``."""

    def __init__(self, speed):
        super().__init__()
        self.speed = speed

    def record(self, kind, index, widths, ref_ms):
        self.factor, self.busy = self.speed(len(self.calls)), {len(self.calls)}
        return super().record(kind, index, widths, ref_ms)


def test_drift_correction_is_used_only_where_the_repeats_agree_better_with_it(tmp_path):
    """A device that slows steadily (a phone warming up): the references track it and the corrected repeats agree
    exactly, so the fit corrects. A device whose speed jumps from call to call (a shared machine): the latest
    reference is one more noisy reading, correction makes the repeats disagree more, so the fit reads raw timings
    and says why."""
    plan = plan_of(60)
    check = NoiseCheck(threshold=0.0, repeat_every=4)
    warming = tmp_path / "warming.jsonl"
    profile(SpeedSession(lambda c: 1.0 + 0.01 * c), plan, str(warming), reference_every=1, progress=False,
            noise=check, say=lambda m: None)
    c = L.file_drift([warming])
    assert c["drift"] is True and c["decided"] and c["corrected"] < c["raw"]
    assert dsamples.noise_summary(records(warming))["drift"] is True
    rng = np.random.default_rng(0)
    jumps = [1.0 + 0.3 * rng.random() for _ in range(1000)]
    jumpy = tmp_path / "jumpy.jsonl"
    profile(SpeedSession(lambda c: jumps[c]), plan, str(jumpy), reference_every=5, progress=False, noise=check,
            say=lambda m: None)
    c = L.file_drift([jumpy])
    assert c["drift"] is False and c["corrected"] > c["raw"]
    s = dsamples.noise_summary(records(jumpy))
    assert s["drift"] is False and s["repeat_rel_diff_median"] == pytest.approx(c["raw"], rel=0.2)
    assert "raw: drift correction would add noise" in dsamples.format_noise(s)
    # no repeats: no evidence, the correction stays on as before the choice existed
    assert L.file_drift([write_jsonl(tmp_path / "plain.jsonl",
                                     [d for d in records(jumpy) if d["kind"] != "repeat"])]) == \
        {"drift": True, "decided": False, "raw": None, "corrected": None, "repeats": 0}

    space = tiny_space()
    space.save(tmp_path / "space.json")
    r = run_module("tfwidth.latency", "fit", "jumpy.jsonl", "--space", "space.json", "-o", "t.json", cwd=tmp_path,
                   timeout=120)
    assert r.returncode == 0, r.stderr
    assert "raw timings (no drift correction): the profiler's" in r.stdout
    table = L.LatencyTable.load(tmp_path / "t.json")
    assert table.drift is False and table.fit["drift_choice"]["drift"] is False
    r = run_module("tfwidth.latency", "fit", "jumpy.jsonl", "--space", "space.json", "--drift", "on", "-o", "t.json",
                   cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "drift-corrected): as asked" in r.stdout, r.stderr
    assert L.LatencyTable.load(tmp_path / "t.json").drift is True


# ---- one reader, partial last lines --------------------------------------------------------------------------------
def test_every_samples_reader_tolerates_a_partial_last_line(tmp_path):
    from tfwidth import refine
    plan, out = plan_of(6), tmp_path / "s.jsonl"
    profile(FakeSession(), plan, str(out), reference_every=3, progress=False,
            noise=NoiseCheck(repeat_every=2), say=lambda m: None)
    whole = out.read_text()
    cut = whole + '{"kind":"sample","index":9,"wid'
    out.write_text(cut)
    recs, tail = dsamples.read_records(out)
    assert len(recs) == len(whole.splitlines()) and tail["line"] == len(recs) + 1
    warnings = []
    assert len(L.load_samples(out, warn=warnings.append)) == 6 and "last line is truncated" in warnings[0]
    assert refine.sample_protocol(out)["runs"] == 3
    steady = refine.HostDevice._steady_reference(SimpleNamespace(protocol={"paired": False}), out, [{"ref_ms": 1}])
    assert steady[0]["ref_ms"] == pytest.approx(sum(SPACE.max_widths) / 1000.0)
    assert L.file_noise([out])["repeats"] == 3
    assert out.read_text() == cut  # readers leave the file alone; the profiler's resume cuts the line off
    assert dsamples.recover(str(out), SPACE.space_hash, dsamples.plan_fingerprint(plan))[0] == set(range(6))
    assert out.read_text() == whole
    # a complete last line without its newline is kept, and the next record does not run into it
    out.write_text(whole.rstrip("\n"))
    dsamples.recover(str(out), SPACE.space_hash)
    with dsamples.Writer(str(out)) as w:
        w.write({"kind": "reference", "index": -1, "space_hash": SPACE.space_hash})
    assert len(dsamples.read_records(out)[0]) == len(whole.splitlines()) + 1
    # anything unreadable before the last line is an error naming the line
    out.write_text("{broken\n" + whole)
    with pytest.raises(L.UsageError, match="s.jsonl:1 is not valid JSON"):
        L.load_samples(out)
    with pytest.raises(DeviceUsageError, match="line 1 is not a sample"):
        dsamples.recover(str(out), SPACE.space_hash)


# ---- profiler CLI: plan fingerprint, template sha256, adb ----------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tfwidth.profile import make_plan, make_template
    d = tmp_path_factory.mktemp("noise")
    tflite, manifest = make_template(SPACE, "fp32", seed=0)
    atomic_write_bytes(d / "template.tflite", tflite)
    write_json(d / "template.json", manifest)
    write_json(d / "plan.json", make_plan(SPACE, 4, "random", seed=0, ladder=False))
    write_json(d / "other.json", make_plan(SPACE, 4, "random", seed=1, ladder=False))
    return d


FAST = ["--runs", 2, "--warmup-runs", 0, "--no-progress", "--reference-every", 0]


def test_a_second_plan_is_not_appended_to_an_out(files, tmp_path):
    out = tmp_path / "s.jsonl"
    p = run_module("device_profiler", "--template", files / "template.tflite", "--plan", files / "plan.json",
                   "--out", out, *FAST)
    assert p.returncode == 0, p.stderr[-2000:]
    fp = dsamples.plan_fingerprint(json.loads((files / "plan.json").read_text()))
    assert {d["plan"] for d in records(out)} == {fp} and "noise:" in p.stdout
    before = out.read_bytes()
    p = run_module("device_profiler", "--template", files / "template.tflite", "--plan", files / "other.json",
                   "--out", out, *FAST)
    assert_usage_error(p, f"{out} holds samples of another plan (fingerprint {fp}", "write to another --out")
    assert out.read_bytes() == before
    # samples of an older profiler carry no fingerprint: resumed as before
    out.write_text("".join(json.dumps({k: v for k, v in d.items() if k != "plan"}) + "\n" for d in records(out)))
    p = run_module("device_profiler", "--template", files / "template.tflite", "--plan", files / "other.json",
                   "--out", out, *FAST)
    assert p.returncode == 0 and "skipped 4 already" in p.stdout, p.stderr[-2000:]


def test_a_manifest_without_the_templates_sha256_is_refused(files, tmp_path):
    from device_profiler import variants
    manifest = json.loads((files / "template.json").read_text())
    assert len(manifest["tflite_sha256"]) == 64  # tfwidth.profile template writes it
    (tmp_path / "t.tflite").write_bytes((files / "template.tflite").read_bytes())
    for bad in (None, "", "abc"):
        write_json(tmp_path / "t.json", dict(manifest, tflite_sha256=bad))
        with pytest.raises(DeviceUsageError, match="records no sha256 of its .tflite.*regenerate both"):
            variants.load(tmp_path / "t.tflite")
    del manifest["tflite_sha256"]
    write_json(tmp_path / "t.json", manifest)
    p = run_module("device_profiler", "--template", tmp_path / "t.tflite", "--plan", files / "plan.json",
                   "--out", tmp_path / "s.jsonl", *FAST)
    assert_usage_error(p, "records no sha256", "python -m tfwidth.profile template")
    assert not (tmp_path / "s.jsonl").exists()


def test_paired_reference_is_refused_with_adb(files, tmp_path):
    p = run_module("device_profiler", "--runner", "adb", "--template", files / "template.tflite", "--plan",
                   files / "plan.json", "--out", tmp_path / "s.jsonl", "--paired-reference", env={"PATH": ""})
    assert_usage_error(p, "--paired-reference needs the local runner", "--reference-every 1")
    assert not (tmp_path / "s.jsonl").exists()


# ---- artefacts: no umask change ------------------------------------------------------------------------------------
def _umask_now() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)


def test_atomic_write_leaves_the_umask_alone_and_gives_the_plain_mode(tmp_path):
    from tfwidth import artifacts
    assert "os.umask(" not in inspect.getsource(artifacts)
    old = os.umask(0o027)  # the test's own, restored below (the code under test must never do this)
    try:
        seen = []
        t = threading.Thread(target=lambda: [seen.append(_umask_now()) for _ in range(200)])
        t.start()
        for i in range(50):
            atomic_write_bytes(tmp_path / f"a{i}.bin", b"x" * i)
        t.join()
        assert set(seen) == {0o027} and _umask_now() == 0o027
        assert {(p.stat().st_mode & 0o777) for p in tmp_path.glob("a*.bin")} == {0o640}
    finally:
        os.umask(old)
    atomic_write_bytes(tmp_path / "b.bin", b"y")
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o666 & ~old
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# ---- the fit against the noise, its verdict, the pipeline ----------------------------------------------------------
def synthetic(space, n, seed, noise, repeat_noise, median=True):
    """Samples of a known table with relative noise, and a repeat of every 5th differing from it by ``repeat_noise``
    (relative to the pair's mean)."""
    from test_latency import make_samples, true_table
    recs = make_samples(space, true_table(space), n, seed=seed, noise=noise, run=f"run{seed}")
    x = repeat_noise / (1 - repeat_noise / 2)
    reps = [dict(d, kind="repeat", ms=dict(d["ms"], min=d["ms"]["min"] * (1 + x))) for d in recs[::5]]
    if not median:
        for d in recs:
            d["ms"] = dict(d["ms"], median=None)
    return recs + reps


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(d) + "\n" for d in recs))
    return path


def test_fit_reports_validation_against_the_noise_and_judges_the_table(tmp_path):
    space = tiny_space()
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "good.jsonl", synthetic(space, 200, 1, 0.01, 0.01))
    write_jsonl(tmp_path / "goodval.jsonl", synthetic(space, 40, 2, 0.01, 0.01))
    r = run_module("tfwidth.latency", "fit", "good.jsonl", "--validation", "goodval.jsonl", "--space", "space.json",
                   "-o", "good_table.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "x the repeat noise (RMSE " in r.stdout and "over 48 repeats" in r.stdout and "verdict: ok" in r.stdout
    fit = json.loads((tmp_path / "good_table.json").read_text())["fit"]
    assert fit["noise"]["repeats"] == 48 and fit["noise"]["repeat_rel_diff_median"] == pytest.approx(0.01)
    assert fit["verdict"]["poor"] is False and fit["verdict"]["rmse_x_noise"] > 0
    assert L.poor_table(tmp_path / "good_table.json") is None

    write_jsonl(tmp_path / "poor.jsonl", synthetic(space, 200, 1, 0.25, 0.12))
    write_jsonl(tmp_path / "poorval.jsonl", synthetic(space, 40, 2, 0.25, 0.12))
    r = run_module("tfwidth.latency", "fit", "poor.jsonl", "--validation", "poorval.jsonl", "--space", "space.json",
                   "-o", "poor_table.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    fit = json.loads((tmp_path / "poor_table.json").read_text())["fit"]
    v = fit["verdict"]
    assert v["poor"] is True and len(v["reasons"]) == 2 and fit["validation"]["within_10pct"] < 0.75
    assert v["reasons"][1] == "two timings of the same configuration differ by 12.0% (median of 48 repeats; at most 5%)"
    assert "TOO POOR TO SOLVE ON: " + v["reasons"][0] in r.stdout
    assert L.poor_table(tmp_path / "poor_table.json") == "; ".join(v["reasons"])
    r = run_module("tfwidth.latency", "validate", "poor_table.json", "poorval.jsonl", cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "TOO POOR TO SOLVE ON" in r.stdout and "over 8 repeats" in r.stdout, r.stderr


def test_samples_without_a_median_are_fitted_on_the_min(tmp_path):
    space = tiny_space()
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "s.jsonl", synthetic(space, 100, 1, 0.01, 0.01, median=False))
    r = run_module("tfwidth.latency", "fit", "s.jsonl", "--statistic", "median", "--space", "space.json",
                   "-o", "t.json", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "100 of 100 samples have no median" in r.stderr and "fitting the min instead" in r.stderr
    assert "statistic min;" in r.stdout
    assert json.loads((tmp_path / "t.json").read_text())["statistic"] == "min"
    t = json.loads((tmp_path / "t.json").read_text())
    t["statistic"] = "median"
    write_json(tmp_path / "median_table.json", t)
    assert_usage_error(run_module("tfwidth.latency", "validate", "median_table.json", "s.jsonl", cwd=tmp_path),
                       "s.jsonl:1: has no ms.median", "--statistic min")


def test_pipeline_stops_on_a_poor_table_with_one_line(tmp_path):
    space = tiny_space(resolution=8, classes=10, levels=3, base=8, layers=4)
    space.save(tmp_path / "space.json")
    write_jsonl(tmp_path / "poor.jsonl", synthetic(space, 120, 1, 0.25, 0.12))
    write_jsonl(tmp_path / "poorval.jsonl", synthetic(space, 40, 2, 0.25, 0.12))
    work = tmp_path / "work"
    p = run_module("tfwidth.pipeline", "--space", tmp_path / "space.json", "--work", work, "--device-samples",
                   tmp_path / "poor.jsonl", "--device-val", tmp_path / "poorval.jsonl", "--epochs", 1)
    assert_usage_error(p, "is too poor to solve on (", "% of 40 validation configurations within +-10% (needs 75%)",
                       "differ by 12.0%", "time them again on a quiet device", "--accept-poor-table")
    assert (work / "table.json").exists() and not (work / "run").exists()  # stopped before training
