"""tools/device_setup.sh, the Pi's one-command install: which runtime it picks for which architecture and Python,
and the one line it answers with where PyPI has no wheel (docs/raspberry_pi.md). The installs themselves run in
emulated arm64 and armhf userlands in tools/pi_check.sh."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

SETUP = ROOT / "tools" / "device_setup.sh"


def fake_python(tmp_path, arch: str, version: str):
    """A `python` that reports ``arch`` and ``version`` to the script's probe and fails anything else (so the script
    must stop before it creates a venv or installs anything)."""
    exe = tmp_path / "fakepy"
    exe.write_text(f"#!/bin/sh\ncase \"$2\" in *calcsize*) echo {arch} {version}; exit 0 ;; esac\nexit 1\n")
    exe.chmod(0o755)
    return str(exe)


def run_setup(cwd, *args):
    return subprocess.run(["bash", str(SETUP), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "pi"
    shutil.copytree(ROOT / "device_profiler", d / "device_profiler")
    return d


@pytest.mark.parametrize("arch, version, message", [
    ("armv7l", "3.13", "no tflite-runtime wheel for Python 3.13 on armv7l (PyPI has cp38-cp311 only"),
    ("armv7l", "3.7", "no tflite-runtime wheel for Python 3.7 on armv7l"),
    ("aarch64", "3.7", "no TFLite runtime wheel for Python 3.7 on aarch64"),
    ("riscv64", "3.11", "no TFLite runtime wheel for riscv64 on PyPI"),
    ("armv6l", "3.11", "no TFLite runtime wheel for armv6l on PyPI"),  # a Pi Zero / 1: no NEON, no armv7l wheel
])
def test_no_wheel_is_one_line_naming_what_to_do(folder, tmp_path, arch, version, message):
    proc = run_setup(folder, "--python", fake_python(tmp_path, arch, version))
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], proc.stderr
    assert not (folder / ".venv-device").exists()


def test_armv7l_without_numpy_for_another_python_says_what_to_install(folder, tmp_path):
    # Debian's python3-numpy serves only the system python3: for another interpreter the script cannot apt it
    proc = run_setup(folder, "--python", fake_python(tmp_path, "armv7l", "3.11"))
    assert proc.returncode == 1 and "PyPI has no armv7l numpy wheel" in proc.stderr, proc.stderr


def test_a_python_that_does_not_run_is_one_line(folder):
    proc = run_setup(folder, "--python", "false")
    assert proc.returncode == 1 and "false does not run as Python 3" in proc.stderr, proc.stderr


def test_refuses_a_folder_without_device_profiler(tmp_path):
    proc = run_setup(tmp_path)
    assert proc.returncode == 1 and "no device_profiler/ here" in proc.stderr, proc.stderr
    assert os.listdir(tmp_path) == []


def test_unknown_option_is_a_usage_error(folder):
    proc = run_setup(folder, "--frobnicate")
    assert proc.returncode == 2 and "unknown option --frobnicate" in proc.stderr
