"""Command-line value checks shared by every CLI (device_profiler's and tfwidth's): argparse ``type=`` helpers.

They run while the command line is parsed, so a bad number or an output that cannot be written is reported (one
line, through errors.ArgumentParser and run_cli) before any work starts or any file is created:

    p.add_argument("--epochs", type=count(0, 100_000))
    p.add_argument("--lr", type=number(0, 100, lo_open=True))
    p.add_argument("-o", "--output", type=output_file)

Stdlib only: device_profiler runs on a device with numpy and a TFLite runtime, and tfwidth imports this too.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

# Larger than any sensible count yet small enough for an int32 (TensorFlow shapes, numpy seeds).
BIG = 2**31 - 1


def count(lo: int = 1, hi: int = BIG):
    """type= for a whole number in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected a whole number from {lo} to {hi}, got {text!r}")
        return v
    parse.__name__ = "count"
    return parse


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """type= for a finite float in the interval lo..hi (either bound optional, open or closed)."""
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    want = " and ".join(s for s in (left, right) if s)

    def parse(text: str) -> float:
        try:
            v = float(str(text).strip())
        except ValueError:
            v = math.nan
        ok = math.isfinite(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a finite number{' ' + want if want else ''}, got {text!r}")
        return v
    parse.__name__ = "number"
    return parse


def _creatable(path: Path, what: str) -> None:
    """Raise ArgumentTypeError unless ``path`` (absent) could be created: its nearest existing ancestor is a writable
    directory (the writers create missing parents)."""
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {what} {str(path)!r}: {str(anc)!r} is a file, not a "
                                         f"directory; choose another location")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {what} {str(path)!r}: no permission to write in "
                                         f"{str(anc)!r}; choose another location")


def output_file(text: str) -> str:
    """type= for a file to write: not a directory, and writable or creatable. Returns the text unchanged."""
    path = Path(text)
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give the file to write, e.g. "
                                         f"{str(path / 'out.json')!r}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise argparse.ArgumentTypeError(f"{text!r} is not writable; fix its permissions or choose another file")
    else:
        _creatable(path, "file")
    return text


def output_dir(text: str) -> str:
    """type= for a directory to write into (created if missing): not a file, and writable or creatable."""
    path = Path(text)
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a directory, got ''")
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file, not a directory; give a directory (it is "
                                             f"created if missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{text!r} is not writable; fix its permissions or choose another "
                                             f"directory")
    else:
        _creatable(path, "directory")
    return text


def cpu_list(text: str) -> str:
    """type= for cores to pin to: comma-separated core numbers (e.g. 0 or 0,1) or 'none' (do not pin). Returns the
    text unchanged (artefacts record it as given); ``cores`` reads it."""
    try:
        cores(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cores(text: str | None) -> list[int] | None:
    """The cores a --cpus value names: None (do not pin) for 'none' or no value, else the core numbers; ValueError
    with the message to show when it is neither."""
    if text is None or str(text).strip() == "none":
        return None
    try:
        got = [int(c) for c in str(text).split(",")]
    except ValueError:
        got = None
    if not got or any(c < 0 or c > 4095 for c in got):
        raise ValueError(f"expected comma-separated core numbers (e.g. 0 or 0,1) or 'none', got {text!r}")
    return got
