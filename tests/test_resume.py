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
