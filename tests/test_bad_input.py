"""Issue 16: every CLI answers bad input with one line on stderr ("error: ..." naming the file or flag and the fix),
exit code 2, no traceback, and no output created or changed.

Most rows call ``run_cli(main, argv)`` in-process (a subprocess importing TensorFlow costs seconds); a few run as
real subprocesses to prove the end-to-end behaviour, and the last tests cover the catch-all and --debug.
"""
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import pytest

import tfwidth  # noqa: F401
from conftest import ROOT, run_module
from device_profiler.errors import run_cli
from tfwidth.artifacts import atomic_write_bytes, write_json
from tfwidth.latency import LatencyTable
from tfwidth.profile import make_plan, make_template
from tfwidth.space import tiny_space
from tfwidth.stats import WidthStats

SPACE = tiny_space()
MODULES = {
    "space": "tfwidth.space", "data": "tfwidth.data", "profile": "tfwidth.profile", "latency": "tfwidth.latency",
    "train": "tfwidth.train", "probe": "tfwidth.probe", "solve": "tfwidth.solve", "export": "tfwidth.export",
    "pipeline": "tfwidth.pipeline", "device": "device_profiler.__main__", "refine": "tfwidth.refine",
}


def _table(space):
    rng = np.random.default_rng(0)
    ks = space.num_choices
    blocks = [np.cumsum(np.cumsum(rng.uniform(0.05, 0.5, (a, b)), 0), 1) for a, b in zip(ks, ks[1:])]
    return LatencyTable(space, np.cumsum(rng.uniform(0.1, 0.3, ks[0])), blocks, np.cumsum(rng.uniform(0, .1, ks[-1])),
                        format="fp32", runtime="ai_edge_litert", threads=1)


def _samples(space, table, n=30):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        w = space.random_widths(rng)
        ms = float(table.predict(w))
        out.append({"kind": "sample", "index": i, "space_hash": space.space_hash, "widths": list(w), "status": "ok",
                    "error": None, "ms": {"min": ms, "median": ms, "mean": ms, "std": 0.0, "count": 20},
                    "runtime": "ai_edge_litert", "runtime_version": "1", "threads": 1, "cpus": [0],
                    "format": "fp32", "ref_ms": 1.0})
    return out


def _stats(space):
    rng = np.random.default_rng(0)
    st = WidthStats(space)
    choices = np.stack([rng.integers(0, k, 200) for k in space.num_choices], 1)
    st.update(choices, (np.array(space.num_choices) - 1 - choices).sum(1) * 0.1)
    st.end_epoch()
    return st


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Valid inputs every row can point at; they must come out of every row unchanged."""
    g = tmp_path_factory.mktemp("good")
    SPACE.save(g / "space.json")
    write_json(g / "plan.json", make_plan(SPACE, 6, "biased", seed=0))
    tflite, manifest = make_template(SPACE, "fp32", seed=0)
    atomic_write_bytes(g / "template.tflite", tflite)
    write_json(g / "template.json", manifest)
    table = _table(SPACE)
    table.save(g / "table.json")
    (g / "samples.jsonl").write_text("".join(json.dumps(d) + "\n" for d in _samples(SPACE, table)))
    _stats(SPACE).save(g / "stats.json")
    write_json(g / "widths.json", {"kind": "widths", "space_hash": SPACE.space_hash, "space": SPACE.to_json(),
                                   "widths": list(SPACE.max_widths)})
    return g


# ---- bad files, made in the row's own directory ---------------------------------------------------------------
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)


def _edited(src, dst, edit):
    d = json.loads(src.read_text())
    edit(d)
    _write(dst, json.dumps(d))


def corrupt_run(t, g):
    """A run directory whose checkpoint record is fine but whose checkpoint files are garbage."""
    run = t / "run"
    shutil.copy(g / "stats.json", _mk(run) / "stats.json")
    shutil.copy(g / "space.json", run / "space.json")
    write_json(run / "ckpt" / "checkpoint.json", {
        "kind": "train_checkpoint", "space_hash": SPACE.space_hash, "space": SPACE.to_json(), "dataset": "digits",
        "batch_size": 32, "seed": 0, "holdout": 0, "epoch": 1, "checkpoint": "ckpt-1"})
    _write(run / "ckpt" / "ckpt-1.index", b"not a checkpoint index")
    _write(run / "ckpt" / "ckpt-1.data-00000-of-00001", b"not checkpoint data")
    _write(run / "ckpt" / "checkpoint", 'model_checkpoint_path: "ckpt-1"\n')


def _mk(d):
    d.mkdir(parents=True, exist_ok=True)
    return d


def object_npz(t, g):
    np.savez(t / "obj.npz", x_train=np.array([object(), 1], dtype=object), y_train=np.zeros(2),
             x_test=np.zeros((2, 8, 8)), y_test=np.zeros(2))


def bad_template(t, g):
    """A .tflite that is no flatbuffer, with a manifest that names it (its sha256), so the parse itself fails."""
    data = b"this is not a flatbuffer at all" * 10
    _write(t / "bad.tflite", data)
    _edited(g / "template.json", t / "bad.json", lambda d: d.update(tflite_sha256=hashlib.sha256(data).hexdigest()))


def bad_manifest(t, g):
    shutil.copy(g / "template.tflite", t / "tpl.tflite")
    _edited(g / "template.json", t / "tpl.json", lambda d: d.update(variables=[{"name": "stem"}]))


def corrupt_images(t, g):
    from PIL import Image
    for split in ("train", "val"):
        for c in range(SPACE.classes):
            d = _mk(t / "imgs" / split / f"c{c}")
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 10 * c + i, np.uint8)).save(d / f"{i}.png")
    _write(t / "imgs" / "train" / "c3" / "broken.png", b"\x89PNG\r\n\x1a\n but then nothing sensible")


SETUPS = {
    "none": lambda t, g: None,
    "dir": lambda t, g: _mk(t / "d"),
    "dir_tflite": lambda t, g: _mk(t / "d.tflite"),
    "dir_json": lambda t, g: _mk(t / "d.json"),
    "file": lambda t, g: _write(t / "f", "x"),
    "empty": lambda t, g: _write(t / "empty.json", ""),
    "truncated": lambda t, g: _write(t / "trunc.json", (g / "space.json").read_text()[:40]),
    "space_strwidths": lambda t, g: _edited(g / "space.json", t / "sp.json",
                                            lambda d: (d.update(base_widths=["a"] * 4), d.pop("space_hash"))),
    "samples_strwidths": lambda t, g: _write(t / "s.jsonl", "".join(
        json.dumps(dict(json.loads(line), widths=["x", 4, 4, 4])) + "\n"
        for line in (g / "samples.jsonl").read_text().splitlines())),
    "samples_binary": lambda t, g: _write(t / "s.jsonl", bytes(range(256)) * 4),
    "stats_missing": lambda t, g: _edited(g / "stats.json", t / "st.json", lambda d: d.pop("count")),
    "table_nospace": lambda t, g: _edited(g / "table.json", t / "tab.json", lambda d: d.pop("space")),
    "table_strings": lambda t, g: _edited(g / "table.json", t / "tab.json", lambda d: d.update(stem="fast")),
    "object_npz": object_npz,
    "empty_npz": lambda t, g: _write(t / "e.npz", b""),
    "lacking_npz": lambda t, g: np.savez(t / "l.npz", x_train=np.zeros((4, 8, 8))),
    "bad_template": bad_template,
    "bad_manifest": bad_manifest,
    "corrupt_run": corrupt_run,
    "corrupt_images": corrupt_images,
    "widths_trunc": lambda t, g: _write(t / "w.json", (g / "widths.json").read_text()[:50]),
}

# common command lines (G: the good directory, T: the row's directory)
REFINE = ["--table", "G/table.json", "--samples", "G/samples.jsonl", "--template", "G/template.tflite",
          "--stats", "G/stats.json", "--target-ms", "1.0", "-o", "T/r.json"]
SOLVE = ["--stats", "G/stats.json", "--latency", "G/table.json", "--target-ms", "2", "-o", "T/w.json"]
EXPORT = ["--widths", "G/widths.json", "--run", "T/run", "--dataset", "digits", "--init", "scratch", "--epochs", "0",
          "--no-measure", "--no-progress", "-o", "T/m.tflite"]
TRAIN = ["--space", "G/space.json", "--dataset", "digits", "--epochs", "1", "--batch-size", "32", "--quiet",
         "--train-limit", "64", "--out", "T/run", "--probe-configs", "0"]
DEVICE = ["--template", "G/template.tflite", "--plan", "G/plan.json", "--out", "T/s.jsonl", "--no-progress"]
PLAN = ["plan", "--space", "G/space.json", "--count", "4", "-o", "T/p.json"]
FIT = ["fit", "G/samples.jsonl", "--space", "G/space.json", "-o", "T/t.json"]
PIPE = ["--work", "T/w", "--dry-run"]


def _set(argv, flag, value):
    """argv with flag's value replaced (or flag added)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


# (id, cli, argv, setup, fragments expected in the error line)
ROWS = [
    # numbers: NaN, inf, negative, zero, absurd, not a number
    ("space-resolution-0", "space", ["--resolution", "0"], "none", ["--resolution", "'0'"]),
    ("space-min-mult-nan", "space", ["--min-mult", "nan"], "none", ["--min-mult", "finite"]),
    ("space-levels-absurd", "space", ["--levels", "99999999999"], "none", ["--levels", "1 to 1000"]),
    ("space-classes-text", "space", ["--classes", "ten"], "none", ["--classes", "whole number"]),
    ("data-batch-negative", "data", ["--batch-size", "-3"], "none", ["--batch-size", "'-3'"]),
    ("plan-count-0", "profile", _set(PLAN, "--count", "0"), "none", ["--count", "'0'"]),
    ("plan-count-text", "profile", _set(PLAN, "--count", "abc"), "none", ["--count", "'abc'"]),
    ("plan-reference-nan", "profile", PLAN + ["--reference", "nan"], "none", ["--reference", "multiplier"]),
    ("fit-holdout-nan", "latency", FIT + ["--holdout", "nan"], "none", ["--holdout", "finite"]),
    ("refine-cpus-text", "refine", REFINE + ["--cpus", "abc"], "none", ["--cpus", "'abc'"]),
    ("refine-target-negative", "refine", _set(REFINE, "--target-ms", "-1"), "none", ["--target-ms", "'-1'"]),
    ("refine-tol-inf", "refine", REFINE + ["--tol", "inf"], "none", ["--tol", "'inf'"]),
    ("train-epochs-0", "train", _set(TRAIN, "--epochs", "0"), "none", ["--epochs", "'0'"]),
    ("train-lr-inf", "train", TRAIN + ["--lr", "inf"], "none", ["--lr", "'inf'"]),
    ("train-batch-0", "train", _set(TRAIN, "--batch-size", "0"), "none", ["--batch-size"]),
    ("train-limit-negative", "train", _set(TRAIN, "--train-limit", "-5"), "none", ["--train-limit"]),
    ("train-target-nan", "train", TRAIN + ["--target-ms", "nan"], "none", ["--target-ms"]),
    ("probe-configs-0", "probe", ["--run", "T/run", "--dataset", "digits", "--configs", "0"], "none", ["--configs"]),
    ("solve-target-nan", "solve", _set(SOLVE, "--target-ms", "nan"), "none", ["--target-ms", "'nan'"]),
    ("solve-target-0", "solve", _set(SOLVE, "--target-ms", "0"), "none", ["--target-ms", "> 0"]),
    ("solve-points-1", "solve", SOLVE + ["--pareto", "--points", "1"], "none", ["--points"]),
    ("export-epochs-negative", "export", _set(EXPORT, "--epochs", "-1"), "none", ["--epochs"]),
    ("export-temperature-0", "export", EXPORT + ["--temperature", "0"], "none", ["--temperature"]),
    ("export-runs-absurd", "export", EXPORT + ["--runs", "1e9"], "none", ["--runs"]),
    ("pipeline-plan-count-0", "pipeline", PIPE + ["--plan-count", "0"], "none", ["--plan-count"]),
    ("pipeline-target-inf", "pipeline", PIPE + ["--target-ms", "inf"], "none", ["--target-ms"]),
    ("pipeline-resolution-0", "pipeline", PIPE + ["--resolution", "0"], "none", ["--resolution"]),
    ("device-runs-0", "device", DEVICE + ["--runs", "0"], "none", ["--runs"]),
    ("device-warmup-nan", "device", DEVICE + ["--warmup-seconds", "nan"], "none", ["--warmup-seconds"]),
    # outputs that cannot be written
    ("space-out-dir", "space", ["-o", "T/d"], "dir", ["-o/--output", "is a directory"]),
    ("space-out-under-file", "space", ["-o", "T/f/space.json"], "file", ["-o/--output", "is a file"]),
    ("plan-out-dir", "profile", _set(PLAN, "-o", "T/d"), "dir", ["-o/--output", "is a directory"]),
    ("template-out-dir", "profile", ["template", "--space", "G/space.json", "-o", "T/d.tflite"], "dir_tflite",
     ["-o/--output", "is a directory"]),
    ("template-manifest-dir", "profile", ["template", "--space", "G/space.json", "-o", "T/d.tflite"], "dir_json",
     ["d.json", "directory"]),
    ("fit-out-dir", "latency", _set(FIT, "-o", "T/d"), "dir", ["-o/--output", "is a directory"]),
    ("refine-out-dir", "refine", _set(REFINE, "-o", "T/d"), "dir", ["-o/--output", "is a directory"]),
    ("solve-out-dir", "solve", _set(SOLVE, "-o", "T/d"), "dir", ["-o/--output", "is a directory"]),
    ("export-out-dir", "export", _set(EXPORT, "-o", "T/d.tflite"), "dir_tflite", ["-o/--output", "is a directory"]),
    ("train-out-file", "train", _set(TRAIN, "--out", "T/f"), "file", ["--out", "not a directory"]),
    ("pipeline-work-file", "pipeline", _set(PIPE, "--work", "T/f"), "file", ["--work", "not a directory"]),
    ("device-out-dir", "device", _set(DEVICE, "--out", "T/d"), "dir", ["--out", "is a directory"]),
    # missing, empty, truncated, mistyped, malformed inputs
    ("plan-space-empty", "profile", _set(PLAN, "--space", "T/empty.json"), "empty", ["empty.json", "JSON"]),
    ("template-space-truncated", "profile", ["template", "--space", "T/trunc.json", "-o", "T/t.tflite"], "truncated",
     ["trunc.json", "JSON"]),
    ("plan-space-string-widths", "profile", _set(PLAN, "--space", "T/sp.json"), "space_strwidths",
     ["sp.json", "malformed"]),
    ("plan-space-missing", "profile", _set(PLAN, "--space", "T/nope.json"), "none", ["nope.json", "does not exist"]),
    ("plan-space-is-dir", "profile", _set(PLAN, "--space", "T/d"), "dir", ["d", "directory"]),
    ("fit-samples-string-widths", "latency", ["fit", "T/s.jsonl", "--space", "G/space.json", "-o", "T/t.json"],
     "samples_strwidths", ["s.jsonl", "widths"]),
    ("fit-samples-binary", "latency", ["fit", "T/s.jsonl", "--space", "G/space.json", "-o", "T/t.json"],
     "samples_binary", ["s.jsonl"]),
    ("validate-plan-for-table", "latency", ["validate", "G/plan.json", "G/samples.jsonl"], "none",
     ["plan.json", "not a latency table"]),
    ("validate-table-without-space", "latency", ["validate", "T/tab.json", "G/samples.jsonl"], "table_nospace",
     ["tab.json", "space"]),
    ("solve-table-strings", "solve", _set(SOLVE, "--latency", "T/tab.json"), "table_strings", ["tab.json"]),
    ("solve-stats-missing-key", "solve", _set(SOLVE, "--stats", "T/st.json"), "stats_missing", ["st.json", "count"]),
    ("solve-plan-for-stats", "solve", _set(SOLVE, "--stats", "G/plan.json"), "none", ["plan.json"]),
    ("refine-stats-missing-key", "refine", _set(REFINE, "--stats", "T/st.json"), "stats_missing", ["st.json"]),
    ("refine-template-not-flatbuffer", "refine", _set(REFINE, "--template", "T/bad.tflite"), "bad_template",
     ["bad.tflite"]),
    ("refine-manifest-malformed", "refine", _set(REFINE, "--template", "T/tpl.tflite"), "bad_manifest",
     ["tpl.json"]),
    ("data-npz-object-arrays", "data", ["npz:T/obj.npz"], "object_npz", ["obj.npz", "object"]),
    ("data-npz-empty", "data", ["npz:T/e.npz"], "empty_npz", ["e.npz"]),
    ("data-npz-lacking", "data", ["npz:T/l.npz"], "lacking_npz", ["l.npz", "y_train"]),
    ("data-folder-corrupt-image", "data", ["folder:T/imgs", "--space", "G/space.json", "--batch-size", "4"],
     "corrupt_images", ["broken.png", "cannot be decoded"]),
    ("train-npz-object-arrays", "train", _set(TRAIN, "--dataset", "npz:T/obj.npz"), "object_npz", ["obj.npz"]),
    ("train-resume-corrupt-checkpoint", "train", TRAIN + ["--resume"], "corrupt_run", ["ckpt-1", "checkpoint"]),
    ("probe-corrupt-checkpoint", "probe", ["--run", "T/run", "--dataset", "digits"], "corrupt_run",
     ["ckpt-1", "checkpoint"]),
    ("export-corrupt-checkpoint", "export", _set(EXPORT, "--init", "supernet"), "corrupt_run", ["ckpt-1"]),
    ("export-widths-truncated", "export", _set(EXPORT, "--widths", "T/w.json"), "widths_trunc", ["w.json", "JSON"]),
    ("export-table-plan", "export", EXPORT + ["--latency", "G/plan.json"], "none", ["plan.json"]),
    ("pipeline-space-truncated", "pipeline", PIPE + ["--space", "T/trunc.json"], "truncated", ["trunc.json"]),
    ("device-template-not-flatbuffer", "device", _set(DEVICE, "--template", "T/bad.tflite"), "bad_template",
     ["bad.tflite"]),
    ("device-plan-truncated", "device", _set(DEVICE, "--plan", "T/trunc.json"), "truncated", ["trunc.json"]),
    ("device-manifest-malformed", "device", _set(DEVICE, "--template", "T/tpl.tflite"), "bad_manifest", ["tpl.json"]),
]
# run these as real subprocesses too: the end-to-end proof
SUBPROCESS = {"space-resolution-0", "data-npz-object-arrays", "solve-target-nan", "refine-cpus-text",
              "device-runs-0", "pipeline-work-file", "probe-corrupt-checkpoint"}


def snapshot(*dirs):
    out = {}
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            out[root] = "dir"
            for f in files:
                p = os.path.join(root, f)
                out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _argv(argv, t, g):
    return [a.replace("G/", f"{g}/").replace("T/", f"{t}/") for a in argv]


def _is_log_noise(line):
    """TensorFlow/absl start-up lines a subprocess may print to stderr despite TF_CPP_MIN_LOG_LEVEL."""
    return line.startswith(("WARNING:", "I0000", "W0000", "E0000")) or " cuda" in line.lower() or not line.strip()


def check_one_line(code, err, fragments):
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err, err
    lines = [l for l in err.strip().splitlines() if not _is_log_noise(l)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert "unexpected" not in lines[0], f"the catch-all answered, not a specific check: {lines[0]}"
    return lines[0]


@pytest.mark.parametrize("rid,cli,argv,setup,fragments", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_writes_nothing(rid, cli, argv, setup, fragments, good, tmp_path, capsys):
    t = tmp_path / "row"
    t.mkdir()
    SETUPS[setup](t, good)
    before = snapshot(t, good)
    main = __import__(MODULES[cli], fromlist=["main"]).main
    code = run_cli(main, _argv(argv, t, good))
    cap = capsys.readouterr()
    check_one_line(code, cap.err, [f.replace("T/", f"{t}/") for f in fragments])
    assert snapshot(t, good) == before


@pytest.mark.parametrize("rid,cli,argv,setup,fragments", [r for r in ROWS if r[0] in SUBPROCESS],
                         ids=sorted(SUBPROCESS, key=[r[0] for r in ROWS].index))
def test_bad_input_in_a_subprocess(rid, cli, argv, setup, fragments, good, tmp_path):
    t = tmp_path / "row"
    t.mkdir()
    SETUPS[setup](t, good)
    before = snapshot(t, good)
    p = run_module(MODULES[cli].removesuffix(".__main__"), *_argv(argv, t, good),
                   env={"TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    check_one_line(p.returncode, p.stderr, fragments)
    assert snapshot(t, good) == before


def test_corrupt_image_mid_training_is_one_line_naming_it(good, tmp_path, capsys):
    """The image is decoded only when training reaches it: the run stops there with one line naming the file
    (what training wrote so far stays, for --resume once the image is fixed)."""
    corrupt_images(tmp_path, good)
    from tfwidth.train import main
    argv = _argv(_set(_set(TRAIN, "--dataset", "folder:T/imgs"), "--batch-size", "4"), tmp_path, good)
    code = run_cli(main, _set(argv, "--train-limit", "21"))
    line = check_one_line(code, capsys.readouterr().err, [str(tmp_path / "imgs/train/c3/broken.png"), "--resume"])
    assert "cannot be decoded" in line


def test_table_covers_every_cli():
    assert len(ROWS) >= 40 and {r[1] for r in ROWS} == set(MODULES)
    assert len({r[0] for r in ROWS}) == len(ROWS)


# ---- the catch-all and --debug ----------------------------------------------------------------------------------
def _boom(argv):
    assert "--debug" not in argv  # run_cli strips it: no parser has to know the flag
    raise KeyError("no 'space' in the thing")


def test_unexpected_exception_is_one_line_with_the_debug_hint(capsys, monkeypatch):
    monkeypatch.delenv("TFWIDTH_DEBUG", raising=False)
    assert run_cli(_boom, ["x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: KeyError: \"no 'space' in the thing\" (unexpected; rerun with --debug to see the " \
                  "traceback)\n"
    with pytest.raises(KeyError):
        run_cli(_boom, ["x", "--debug"])
    monkeypatch.setenv("TFWIDTH_DEBUG", "1")
    with pytest.raises(KeyError):
        run_cli(_boom, ["x"])


def test_argv_none_reads_sys_argv_without_debug(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "argv", ["prog", "--a", "--debug", "b"])
    assert run_cli(lambda argv: seen.append(argv) or 0) == 0
    assert seen == [["--a", "b"]]


def test_device_usage_error_inside_tfwidth_is_one_line(capsys):
    from device_profiler.errors import UsageError as DeviceUsageError
    from tfwidth.errors import UsageError, run_cli as tf_run_cli

    def stage(argv):  # the pipeline runs device_profiler's main in-process
        raise DeviceUsageError("template t.tflite does not exist; create it")
    assert tf_run_cli is run_cli and issubclass(UsageError, DeviceUsageError)
    assert run_cli(stage, []) == 2
    assert capsys.readouterr().err == "error: template t.tflite does not exist; create it\n"


def test_debug_shows_the_traceback_in_a_subprocess(tmp_path):
    # every foreseen bad input has its own check, so a genuinely unexpected error comes from a stand-in main
    code = ("import sys\nfrom device_profiler.errors import run_cli\n"
            "def main(argv):\n    return {}['missing']\n"
            "sys.exit(run_cli(main))\n")
    script = tmp_path / "boom.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TFWIDTH_DEBUG", None)
    import subprocess
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and p.stderr == ("error: KeyError: 'missing' (unexpected; rerun with --debug to see "
                                              "the traceback)\n")
    p = subprocess.run([sys.executable, str(script), "--debug"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1 and "Traceback" in p.stderr and "KeyError: 'missing'" in p.stderr


def test_help_mentions_debug(capsys):
    from tfwidth.solve import main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--debug" in capsys.readouterr().out
