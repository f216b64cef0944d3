import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# (TensorFlow's log level is tfwidth's to set, as for a user: tfwidth/__init__.py, device_profiler/console.py)
ROOT = Path(__file__).resolve().parents[1]


def tiny_v2(resolution: int = 16, classes: int = 10, levels: int = 3, stages: int = 3, scale: int = 4):
    """A small MobileNetV2 space: its first ``stages`` stages (3: residual blocks in two of them), base widths divided
    by ``scale``, multiples of 4, multipliers 0.5..1.5."""
    from tfwidth.arch import mobilenet_v2 as v2
    from tfwidth.space import SearchSpace
    return SearchSpace(name="tiny_v2", arch="mobilenet_v2",
                       base_widths=tuple(max(4, b // scale) for b in v2.base_widths(stages)),
                       strides=v2.strides(1, (1, 2, 2, 2, 1, 2, 1)[:stages]), resolution=resolution, classes=classes,
                       min_mult=0.5, max_mult=1.5, levels=levels, divisor=4)


def run_module(module, *args, cwd=None, env=None, timeout=600):
    """Run `python -m module args` as a user would; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd or ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)


def assert_usage_error(proc, *fragments):
    """One clear line on stderr, exit code 2, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    err = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(err) == 1, proc.stderr
    for f in fragments:
        assert f in err[0], (f, err[0])


@pytest.fixture
def runmod():
    return run_module


def run_tflite(model_bytes: bytes, x):
    """The model's first output for each example of ``x`` (run one at a time, batch axis added), under LiteRT with one
    thread: how tests compare a variant with a model converted directly."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=model_bytes, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    out = []
    for xi in x:
        it.set_tensor(i, xi[None])
        it.invoke()
        out.append(it.get_tensor(o)[0].copy())
    return np.array(out)
