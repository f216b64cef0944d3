"""Resume that is real: Pipeline.stage skips only a stage that finished with the same arguments, inputs and outputs,
resumes an interrupted one only when it has something to resume from, and a pipeline SIGKILLed at several moments
in every stage completes when run again, with nothing duplicated and the artefacts of an uninterrupted run."""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_module
from tfwidth.artifacts import fingerprint, write_set
from tfwidth.pipeline import Pipeline


# ---- Pipeline.stage on a fake stage ---------------------------------------------------------------------------------
@pytest.fixture
def fake(monkeypatch, tmp_path):
    """A stage module whose main(argv) records its argv and writes the file after -o (``fail``: raise instead)."""
    mod = types.ModuleType("fake_stage")
    mod.calls, mod.fail = [], False

    def main(argv):
        mod.calls.append(list(argv))
        if mod.fail:
            raise KeyboardInterrupt  # what a kill leaves: the stage started and never returned
        out = Path(argv[argv.index("-o") + 1])
        out.write_text("out of " + Path(argv[argv.index("-i") + 1]).read_text())
        return 0
    mod.main = main
    monkeypatch.setitem(sys.modules, "fake_stage", mod)
    (tmp_path / "in.txt").write_text("a")
    return mod


def _run(tmp_path, **kw):
    pl = Pipeline(tmp_path, "h")
    argv = ["-i", tmp_path / "in.txt", "-o", tmp_path / "out.txt"]
    return pl.stage("s", "fake_stage", argv, [tmp_path / "out.txt"], inputs=[tmp_path / "in.txt"], **kw)


def test_fingerprint_and_write_set(tmp_path):
    assert fingerprint(tmp_path / "none") is None
    (tmp_path / "f").write_bytes(b"abc")
    assert fingerprint(tmp_path / "f") == {
        "size": 3, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    write_set([(tmp_path / "a", b"1"), (tmp_path / "b", b"22")])
    assert (tmp_path / "a").read_bytes() == b"1" and (tmp_path / "b").read_bytes() == b"22"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "f"]  # no temporaries left


def test_finished_stage_is_skipped_until_an_output_or_input_changes(fake, tmp_path, capsys):
    assert _run(tmp_path) and len(fake.calls) == 1
    rec = json.loads((tmp_path / "pipeline.json").read_text())["stages"]["s"]
    assert rec["done"] and rec["outputs"] == {str(tmp_path / "out.txt"): fingerprint(tmp_path / "out.txt")}
    assert rec["inputs"] == {str(tmp_path / "in.txt"): fingerprint(tmp_path / "in.txt")}
    assert not _run(tmp_path) and len(fake.calls) == 1
    assert "[s] up to date, skipped" in capsys.readouterr().out

    (tmp_path / "out.txt").write_text("edited by hand")
    assert _run(tmp_path) and len(fake.calls) == 2
    assert f"[s] running again: output {tmp_path / 'out.txt'} changed since it finished" in capsys.readouterr().out
    (tmp_path / "out.txt").unlink()
    assert _run(tmp_path) and len(fake.calls) == 3
    assert f"output {tmp_path / 'out.txt'} was deleted since it finished" in capsys.readouterr().out
    assert not _run(tmp_path)

    (tmp_path / "in.txt").write_text("b")
    assert _run(tmp_path) and len(fake.calls) == 4
    assert f"[s] running again: input {tmp_path / 'in.txt'} changed since it ran" in capsys.readouterr().out
    assert (tmp_path / "out.txt").read_text() == "out of b"


def test_interrupted_stage_resumes_only_when_resumable(fake, tmp_path, capsys):
    partial = tmp_path / "partial"
    fake.fail = True
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, resume_flag="--resume", resumable=lambda: True, partial=[partial])
    partial.mkdir()  # what the interrupted run left
    assert json.loads((tmp_path / "pipeline.json").read_text())["stages"]["s"]["done"] is False
    fake.fail = False
    # resumable: the flag is passed, the partial output kept, and the record keeps the argv without the flag
    assert _run(tmp_path, resume_flag="--resume", resumable=lambda: True, partial=[partial])
    assert fake.calls[-1][-1] == "--resume" and partial.exists()
    assert "[s] interrupted: resuming" in capsys.readouterr().out
    rec = json.loads((tmp_path / "pipeline.json").read_text())["stages"]["s"]
    assert rec["done"] and "--resume" not in rec["argv"]
    assert not _run(tmp_path, resume_flag="--resume", resumable=lambda: True)

    # not resumable: no flag, and the partial output is deleted before the stage starts over
    (tmp_path / "out.txt").unlink()
    fake.fail = True
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, resume_flag="--resume", resumable=lambda: False, partial=[partial])
    partial.mkdir()
    fake.fail = False
    assert _run(tmp_path, resume_flag="--resume", resumable=lambda: False, partial=[partial])
    assert "--resume" not in fake.calls[-1] and not partial.exists()
    assert "[s] interrupted: nothing to resume from, starting over" in capsys.readouterr().out

    # interrupted, then its input changed: what it left belongs to other inputs, so it starts over
    (tmp_path / "out.txt").unlink()
    fake.fail = True
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, resume_flag="--resume", resumable=lambda: True, partial=[partial])
    partial.write_text("x")
    fake.fail = False
    (tmp_path / "in.txt").write_text("c")
    assert _run(tmp_path, resume_flag="--resume", resumable=lambda: True, partial=[partial])
    assert "--resume" not in fake.calls[-1] and not partial.exists()


@pytest.mark.parametrize("old", [{"done": True}, {"done": False}, {"done": True, "inputs": {}}])
def test_old_record_without_fingerprints_is_redone(fake, tmp_path, capsys, old):
    argv = [str(a) for a in ["-i", tmp_path / "in.txt", "-o", tmp_path / "out.txt"]]
    (tmp_path / "out.txt").write_text("old")
    (tmp_path / "pipeline.json").write_text(json.dumps(
        {"kind": "pipeline", "space_hash": "h", "stages": {"s": dict(old, argv=argv)}}))
    assert _run(tmp_path, resume_flag="--resume", resumable=lambda: True)
    assert fake.calls == [argv]  # redone from scratch, not resumed
    assert "[s] running again: " in capsys.readouterr().out
    assert (tmp_path / "out.txt").read_text() == "out of a"
    assert not _run(tmp_path)


# ---- the pipeline SIGKILLed at several moments in every stage --------------------------------------------------------
SPACE = dict(resolution=8, classes=10, levels=3, base=8, layers=4)
QUICK = ["--dataset", "digits", "--batch-size", 32, "--train-limit", 256, "--target-mult", 1.5, "--probe-configs", 40,
         "--seed", 0,
         # ~2 us networks (timer resolution) and made-up device samples: the fit's verdict is often "too poor to
         # solve on" here, and the refinement rarely converges on them, which is not what these tests are about
         "--accept-poor-table", "--accept-unconverged"]


def pipeline_cmd(work, space_json, *extra):
    return [sys.executable, "-m", "tfwidth.pipeline", "--space", str(space_json), "--work", str(work),
            *map(str, QUICK), *map(str, extra)]


def run_and_kill(cmd, stage: str, after: Path | None, delay: float) -> tuple[int, str]:
    """Run cmd; once it prints that ``stage`` starts (and a file matching ``after`` exists, if given; it may hold a *),
    wait up to ``delay`` seconds and SIGKILL it. The kill lands inside ``stage``: as soon as another stage's line is
    printed the wait ends (a fast stage must not run on into the next ones, which would then never be interrupted).
    Returns (exit code: -9 if killed, 0 if it finished first, anything else is a failure; output)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started, moved_on, lines = threading.Event(), threading.Event(), []

    def read():
        for line in p.stdout:
            lines.append(line)
            if line.startswith(f"[{stage}] python -m "):
                started.set()
            elif started.is_set() and line.startswith("[") and not line.startswith(f"[{stage}]"):
                moved_on.set()
        started.set()  # ended without reaching the stage
        moved_on.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait()
    while after is not None and not list(Path(after.anchor).glob(str(after.relative_to(after.anchor)))) \
            and p.poll() is None and not moved_on.is_set():
        time.sleep(0.01)
    moved_on.wait(delay)
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()
    reader.join()
    return p.returncode, "".join(lines)


def kill_until_done(cmd, kills, seed: int, log_path: Path) -> str:
    """SIGKILL the pipeline at each (stage, file to wait for or None, max delay) of ``kills`` with a seeded random
    delay, then run it to the end; every run ends killed or complete. Returns all the runs' output (also written to
    log_path, to see where the kills landed)."""
    rng = random.Random(seed)
    log = []
    for stage, after, most in kills:
        rc, out = run_and_kill(cmd, stage, after, rng.uniform(0, most))
        log.append(f"\n=== kill in {stage}: exit {rc}\n{out}")
        assert rc in (0, -signal.SIGKILL), "".join(log)[-6000:]
    rc, out = run_and_kill(cmd, "(none)", None, 0)
    log.append(f"\n=== to the end: exit {rc}\n{out}")
    log_path.write_text("".join(log))
    assert rc == 0, "".join(log)[-6000:]
    return "".join(log)


def synthetic_device(d: Path, space) -> tuple[Path, Path]:
    """samples.jsonl and val.jsonl as a device would time them, with a made-up deterministic latency (so the fit,
    the target and everything after are the same in every run)."""
    from tfwidth import profile
    files = []
    for name, kind, count, seed in (("samples", "biased", 40, 0), ("val", "random", 10, 1)):
        assert profile.main(["plan", "--space", str(d / "space.json"), "--count", str(count), "--kind", kind,
                             "--seed", str(seed), "-o", str(d / f"{name}_plan.json")]) == 0
        plan = json.loads((d / f"{name}_plan.json").read_text())
        with open(d / f"{name}.jsonl", "w") as f:
            for i, w in enumerate(plan["configs"]):
                ms = 0.002 + space.macs(w) * 1e-8 + 1e-4 * (i % 3)
                f.write(json.dumps({"kind": "sample", "index": i, "space_hash": space.space_hash, "widths": w,
                                    "status": "ok", "ms": {"min": ms, "median": ms * 1.01, "mean": ms * 1.02},
                                    "ref_ms": 0.01, "runtime": "fake", "format": "fp32", "threads": 1}) + "\n")
        files.append(d / f"{name}.jsonl")
    return tuple(files)


def _json(path, *drop):
    """A JSON artefact without the fields named by the paths in ``drop`` (a/b/c), which hold wall times."""
    d = json.loads(Path(path).read_text())
    for p in drop:
        *head, last = p.split("/")
        node = d
        for k in head:
            node = node[k]
        node.pop(last)
    return d


def _weights(run: Path) -> dict:
    import numpy as np
    import tensorflow as tf
    side = json.loads((run / "ckpt" / "checkpoint.json").read_text())
    r = tf.train.load_checkpoint(str(run / "ckpt" / side["checkpoint"]))
    return {k: np.asarray(r.get_tensor(k)).tolist() for k in sorted(r.get_variable_to_shape_map())
            if not k.startswith("save_counter") and k != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.mark.slow
def test_pipeline_killed_in_every_stage_ends_as_an_uninterrupted_run(tmp_path):
    """Device samples given: every stage (fit, train, solve, export with fine-tuning) is deterministic, so the run
    killed in each of them ends with the artefacts of the uninterrupted run."""
    from tfwidth.space import tiny_space
    space = tiny_space(**SPACE)
    space.save(tmp_path / "space.json")
    samples, val = synthetic_device(tmp_path, space)
    extra = ["--device-samples", samples, "--device-val", val, "--epochs", 2, "--finetune-epochs", 2]
    ref, work = tmp_path / "ref", tmp_path / "work"
    p = subprocess.run(pipeline_cmd(ref, tmp_path / "space.json", *extra), cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]

    run = work / "run"
    kills = [("fit", None, 0.5),
             ("train", None, 2.0),                               # before its first checkpoint: starts over
             ("train", run / "ckpt" / "ckpt-1.index", 0.3),      # in epoch 2: resumes from epoch 1
             ("train", run / "ckpt" / "ckpt-2.index", 0.5),      # in the probe: resumes after the last epoch
             ("solve", None, 0.3),
             ("export", None, 2.0),                              # before its first checkpoint
             ("export", run / "export" / "*" / "train" / "ckpt-1.index", 0.2),  # in epoch 2: resumes from epoch 1
             ("export", run / "export" / "*" / "train" / "ckpt-2.index", 1.0)]  # converting: resumes, trained

    log = kill_until_done(pipeline_cmd(work, tmp_path / "space.json", *extra), kills, seed=1,
                          log_path=tmp_path / "kills.log")
    assert "[train] interrupted: resuming" in log and "[export] interrupted: resuming" in log, log[-6000:]

    again = run_module("tfwidth.pipeline", *pipeline_cmd(work, tmp_path / "space.json", *extra)[3:])
    assert again.returncode == 0 and again.stdout.count("up to date, skipped") == 4, again.stdout[-3000:]
    assert all(r["done"] for r in json.loads((work / "pipeline.json").read_text())["stages"].values())

    # nothing duplicated: one log line per epoch
    assert [json.loads(l)["epoch"] for l in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert _json(work / "table.json") == _json(ref / "table.json")
    assert _json(work / "run/summary.json") == _json(ref / "run/summary.json")
    assert _json(work / "widths.json", "stats", "table") == _json(ref / "widths.json", "stats", "table")  # paths
    # the probe's wall time is the one field of stats.json a resumed run changes
    assert _json(run / "stats.json", "probe/info/seconds") == _json(ref / "run/stats.json", "probe/info/seconds")
    assert _weights(run) == _weights(ref / "run")
    rep, rref = (json.loads((w / "model_fp32.report.json").read_text()) for w in (work, ref))
    for key in ("keras", "tflite", "widths", "size_bytes", "agreement"):
        assert rep[key] == rref[key], key
    assert (work / "model_fp32.tflite").read_bytes() == (ref / "model_fp32.tflite").read_bytes()


@pytest.mark.slow
def test_pipeline_killed_while_profiling_times_each_configuration_once(tmp_path):
    """This CPU as the device: killed in the template, plan, profiling, fit, refine and solve stages, the run completes
    with every plan index timed exactly once, the plans of an uninterrupted run and the fit of the final samples."""
    from tfwidth import latency, profile
    from tfwidth.space import tiny_space
    tiny_space(**SPACE).save(tmp_path / "space.json")
    work = tmp_path / "work"
    extra = ["--plan-count", 120, "--val-count", 30, "--runs", 10, "--epochs", 1, "--finetune-epochs", 0]
    kills = [("template", None, 6.0),
             ("plan", None, 0.2),
             ("profile", None, 0.0),                     # before its first sample: starts over
             # mid-profile (the first window is on disk; the whole stage takes ~0.2 s here): resumes by appending
             ("profile", work / "samples.jsonl", 0.0),
             ("profile_val", work / "val.jsonl", 0.2),
             ("fit", None, 0.5),
             ("refine", None, 1.0),
             ("solve", None, 0.5)]
    log = kill_until_done(pipeline_cmd(work, tmp_path / "space.json", *extra), kills, seed=2,
                          log_path=tmp_path / "kills.log")
    assert "[profile] interrupted: resuming" in log, log[-6000:]
    for name, plan in (("samples.jsonl", "plan.json"), ("val.jsonl", "val_plan.json")):
        lines = [json.loads(l) for l in (work / name).read_text().splitlines()]
        timed = sorted(d["index"] for d in lines if d["kind"] == "sample")
        assert timed == list(range(len(_json(work / plan)["configs"]))), name  # none twice, none missing

    for name, count, kind, seed in (("plan", 120, "stratified", 0), ("val_plan", 30, "random", 1)):
        assert profile.main(["plan", "--space", str(tmp_path / "space.json"), "--count", str(count), "--kind", kind,
                             "--seed", str(seed), "-o", str(tmp_path / f"{name}.json")]) == 0
        assert _json(work / f"{name}.json") == _json(tmp_path / f"{name}.json"), name
    # the table is the fit of the samples the profiler left at the end, not of a partial set
    assert latency.main(["fit", str(work / "samples.jsonl"), "--space", str(work / "space.json"), "--validation",
                         str(work / "val.jsonl"), "-o", str(tmp_path / "table.json")]) == 0
    assert _json(work / "table.json") == _json(tmp_path / "table.json")
    again = run_module("tfwidth.pipeline", *pipeline_cmd(work, tmp_path / "space.json", *extra)[3:])
    assert again.returncode == 0 and again.stdout.count("up to date, skipped") == 10, again.stdout[-3000:]
