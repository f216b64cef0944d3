"""samples.jsonl: one self-contained JSON object per timed configuration, appended and flushed as it is measured.

A run killed at any moment leaves at most one partial last line: on restart it is cut off (with a warning) and the
plan indices already present are skipped, so nothing is lost or timed twice.
"""
from __future__ import annotations

import json
import os
import sys

from device_profiler.errors import UsageError


def recover(path: str, space_hash: str) -> tuple[set, float | None]:
    """Plan indices already in `path` and the latest reference min ms; drops a truncated last line in place."""
    if not os.path.exists(path):
        return set(), None
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        print(f"warning: {path}: skipping a truncated last line ({len(data) - end} bytes) left by an interrupted run",
              file=sys.stderr)
        with open(path, "r+b") as f:
            f.truncate(end)
    done, ref = set(), None
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            kind, index, h = d["kind"], int(d["index"]), d["space_hash"]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path} line {n} is not a sample ({e}); write to a new --out file") from None
        if h != space_hash:
            raise UsageError(f"{path} holds samples of space {h} but the template is for space {space_hash}; "
                             f"write to a new --out file")
        if kind == "sample":
            done.add(index)
        elif kind == "reference" and d.get("status") == "ok":
            ref = d["ms"]["min"]
    return done, ref


class Writer:
    """Appends one line per sample; flushed and synced so a kill (or power loss) loses at most the line in flight."""

    def __init__(self, path: str):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
