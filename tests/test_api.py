"""The public API (tfwidth/__init__.py): every name resolves, the import stays free of TensorFlow, and the example of
docs/interfaces.md ("Python API") runs the whole flow as it is written there."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example_code() -> str:
    text = (ROOT / "docs" / "interfaces.md").read_text()
    section = text.split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_every_public_name_resolves_and_the_import_loads_no_tensorflow():
    code = ("import sys, tfwidth\n"
            "assert 'tensorflow' not in sys.modules, 'import tfwidth loaded TensorFlow'\n"
            "missing = [n for n in tfwidth.__all__ if getattr(tfwidth, n, None) is None]\n"
            "assert not missing, missing\n"
            "assert set(tfwidth.__all__) <= set(dir(tfwidth))\n"
            "try:\n    tfwidth.no_such_name\nexcept AttributeError as e:\n    print('ok', e)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ok module 'tfwidth' has no attribute 'no_such_name'" in p.stdout


@pytest.mark.slow
def test_the_documented_example_runs_the_whole_flow(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(example_code())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    work = tmp_path / "work"
    from tfwidth.space import tiny_space
    space = tiny_space()
    widths = json.loads((work / "widths.json").read_text())
    assert widths["space_hash"] == space.space_hash
    space.validate(widths["widths"])  # a configuration of the space
    report = json.loads((work / "model.report.json").read_text())
    assert report["space_hash"] == space.space_hash and report["widths"] == widths["widths"]
    assert (work / "model.tflite").stat().st_size > 0
    line = [l for l in p.stdout.splitlines() if l.startswith("widths ")]
    assert line and line[-1].startswith(f"widths {tuple(widths['widths'])} predicted")
