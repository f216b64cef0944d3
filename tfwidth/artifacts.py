"""Artefacts are JSON/JSONL/npz written atomically (temp file + rename) and stamped with the space's hash."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from device_profiler.files import atomic_write_bytes  # noqa: F401  (the one copy: the device writes files too)
from tfwidth.errors import SpaceMismatch, UsageError


def pyplot():
    """matplotlib.pyplot drawing off-screen (Agg: no display is needed, nor used when there is one)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig, dpi: int = 120) -> bytes:
    """The matplotlib figure ``fig`` as PNG bytes; the figure is closed."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def _default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (numpy scalars, arrays and tuples become JSON), so a killed
    writer leaves the old file or the new one, never half of one."""
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, default=_default) + "\n").encode())


def read_json(path, what: str = "file") -> dict:
    """The JSON object at ``path``; a missing, directory or unreadable file is a UsageError that names it as
    ``what`` (e.g. "latency table"), so the CLI says which input is wrong."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give the file itself")
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path} ({e.strerror or e}); check the path and its permissions") \
            from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not a text (JSON) file; pass the file tfwidth wrote") from None
    if not text.strip():
        raise UsageError(f"{what} {path} is empty (not valid JSON); regenerate it")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} {path} is not valid JSON ({e}); regenerate it") from None
    if not isinstance(d, dict):
        raise UsageError(f"{what} {path} should hold a JSON object")
    return d


def check_space(artifact: dict, space, what: str) -> None:
    """Refuse an artefact made for another search space, naming both hashes."""
    h = artifact.get("space_hash")
    if h is None:
        raise UsageError(f"{what} records no space_hash; regenerate it with this version of tfwidth")
    if h != space.space_hash:
        raise SpaceMismatch(f"{what} was made for space {h} but the space here is {space.space_hash} "
                            f"({space.name}); use the space.json it was made with, or regenerate it")


def save_npz(path, **arrays) -> None:
    """Write ``arrays`` as a compressed .npz to ``path`` atomically."""
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path) -> dict:
    """{name: array} of the .npz at ``path`` (no pickles); a missing or unreadable file is a UsageError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except Exception as e:  # a zip error, an object array (no pickle, ever): the file is not what we wrote
        raise UsageError(f"cannot read {path} as an npz of numeric arrays ({type(e).__name__}: {e}); regenerate "
                         f"it") from None


def fingerprint(path) -> dict | None:
    """{"size": bytes, "sha256": hex} of the file at ``path`` (read in 1 MiB chunks), or None if it does not exist.

    The pipeline records these for a stage's inputs and outputs to tell a finished stage from one whose files changed.
    """
    import hashlib
    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": h.hexdigest()}


def json_bytes(obj, indent: int | None = 1) -> bytes:
    """What write_json writes: the JSON text of ``obj`` (numpy scalars and arrays as numbers and lists), newline."""
    return (json.dumps(obj, indent=indent, default=_default) + "\n").encode()


def write_set(files) -> None:
    """Write several files as one artefact: each (path, bytes) to a hidden temporary beside its path first (each
    atomically), then rename them into place in the order given. The last one's presence thus means every other one
    is complete and of the same run; a kill before the renames leaves the old files as they were (and at most a
    ``.NAME.pending`` temporary, overwritten by the next write)."""
    pending = []
    try:
        for path, data in files:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.pending")
            atomic_write_bytes(tmp, data)
            pending.append((tmp, path))
        for tmp, path in pending:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in pending:
            if tmp.exists():
                tmp.unlink()
        raise
