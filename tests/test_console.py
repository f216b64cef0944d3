"""What a user sees on the console: the `tfwidth` command runs each stage's own parser, --version loads no
TensorFlow, TensorFlow's and LiteRT's start-up messages stay hidden unless --verbose, progress is a bar on a terminal
and a line a minute in a file, and the pipeline's display flags do not make a finished stage run again."""
import contextlib
import io
import os
import subprocess
import sys

import pytest

import tfwidth  # noqa: F401
from conftest import ROOT
from device_profiler import console
from device_profiler import errors as device_errors
from tfwidth.__main__ import COMMANDS, main as tfwidth_main


def help_of(main, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_subcommand_is_its_modules_own_parser(command, monkeypatch):
    import importlib
    monkeypatch.setattr(device_errors, "_INVOKED_AS", {})
    module = COMMANDS[command][0]
    direct = help_of(importlib.import_module(module).main, ["--help"])
    through = help_of(tfwidth_main, [command, "--help"])
    # the same parser, naming itself as typed (argparse wraps the usage lines to the prog's length)
    norm = lambda s: " ".join(s.split())  # noqa: E731
    assert norm(through) == norm(direct.replace(f"python -m {module}", f"tfwidth {command}"))
    assert f"usage: tfwidth {command}" in through and "--verbose" in through


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFWIDTH_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_version_names_the_libraries_without_loading_tensorflow():
    code = "import sys; from tfwidth.__main__ import main; main(['--version']); print('tf loaded', 'tensorflow' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"tfwidth {tfwidth.__version__}")
    assert "TensorFlow 2." in p.stdout and ("LiteRT" in p.stdout) and "tf loaded False" in p.stdout


# A CLI that loads TensorFlow, converts a model and runs it in LiteRT: every library that prints at start-up
NOISY_CLI = '''
import sys
import tfwidth
from tfwidth.errors import ArgumentParser, run_cli

def main(argv):
    ArgumentParser(prog="noisy").parse_args(argv)
    import tensorflow as tf
    f = tf.function(lambda x: x * 2.0 + 1.0, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    from device_profiler import runtime
    it = runtime.select().interpreter(conv.convert(), 1)
    it.invoke()
    print("ran")

sys.exit(run_cli(main))
'''


def test_tensorflow_and_litert_start_quietly_unless_verbose():
    quiet = subprocess.run([sys.executable, "-c", NOISY_CLI], env=clean_env(), capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ran", quiet.stderr
    assert quiet.stderr == ""
    loud = subprocess.run([sys.executable, "-c", NOISY_CLI, "--verbose"], env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert loud.returncode == 0 and loud.stdout.strip() == "ran", loud.stderr
    assert "XNNPACK" in loud.stderr  # LiteRT's delegate line: what the quiet run hid


def test_progress_is_a_line_with_an_eta_when_not_a_terminal():
    buf = io.StringIO()
    with console.Progress(4, "profiling", unit="cfg", file=buf, every=0) as bar:
        for _ in range(4):
            bar.postfix(loss="0.5")
            bar.update()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in buf.getvalue()
    assert lines[0].startswith("profiling: 1/4 cfg") and "ETA" in lines[0] and lines[0].endswith("loss 0.5")
    assert lines[-1].startswith("profiling: 4/4 cfg") and "ETA 0:00" in lines[-1]
    # a minute between lines by default: a quick loop prints none; disabled: never
    quiet = io.StringIO()
    with console.Progress(3, "x", file=quiet) as bar, console.Progress(3, "y", file=quiet, every=0,
                                                                         enabled=False) as off:
        for _ in range(3):
            bar.update()
            off.update()
    assert quiet.getvalue() == ""


def test_progress_is_a_bar_on_a_terminal():
    buf = io.StringIO()
    with console.Progress(2, "train", file=buf, tty=True) as bar:
        bar.update(2)
        assert bar.bar is not None  # tqdm's
    drawn = buf.getvalue()
    assert drawn.startswith("\rtrain:") and "/2 [" in drawn  # redrawn in place, with its ETA in the brackets


def test_display_flags_do_not_make_a_finished_stage_stale(tmp_path):
    from tfwidth.pipeline import Pipeline
    done = {"argv": ["--plan", "p.json", "--no-progress"], "done": True, "inputs": {}, "outputs": {}}
    assert Pipeline.stale(done, ["--plan", "p.json"], {}, []) is None
    assert Pipeline.stale(done, ["--plan", "q.json"], {}, []) == "its arguments changed"


def test_closing_line_names_what_was_written_with_sizes_and_time(tmp_path):
    """Every CLI ends with console.wrote: files with their sizes, directories with a slash, missing paths left out,
    paths relative to the base when under it, and the time taken."""
    (tmp_path / "small.json").write_text("x" * 10)
    (tmp_path / "big.bin").write_bytes(b"0" * 4096)
    (tmp_path / "ckpt").mkdir()
    line = console.wrote([tmp_path / "small.json", tmp_path / "big.bin", tmp_path / "ckpt", tmp_path / "missing"],
                         75.2, base=tmp_path, name="train")
    assert line == "[train] wrote small.json (10 B), big.bin (4 KiB), ckpt/ in 1 min 15 s"
    assert console.wrote([], 0.04) == "wrote nothing in 0.0 s"
