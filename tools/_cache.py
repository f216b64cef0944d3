"""One cache mechanism for the benchmarks: a cached result is reused only when everything it was computed from is
the same (issue 16: benchmarks that cannot mix runs).

A key is the sha256 of a canonical JSON of its *parts*: the arguments that matter, the sha256 of each input file
(streamed; a supernet run directory by its checkpoint index and stats.json), and the code that computes it (the
sha256 of the source files that matter, so an uncommitted edit invalidates too; the git commit is recorded beside
the key for the reader, not keyed, so that committing or editing docs does not throw away hours of training).

    parts = {"args": {...}, "inputs": {"table": file_digest(p)}, "code": code_digest("tfwidth/refine.py")}
    hit = load(path, parts)           # the stored result, or None (and one line "recomputed: ...: what changed")
    if hit is None:
        hit = compute(); store(path, parts, hit)

No TensorFlow (tfwidth.artifacts only, for its file fingerprint): tests and the profiler soak use it alike.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfwidth.artifacts import fingerprint  # noqa: E402  (the pipeline's file fingerprint: one copy of it)

# The sources every result depends on one way or another (the shared vocabulary: the space, its architecture and the
# cost type; the artefact format); callers add the modules of their own computation.
BASE_CODE = ("tfwidth/space.py", "tfwidth/arch", "tfwidth/cost.py", "tfwidth/artifacts.py")


def file_digest(path) -> str | None:
    """sha256 of a file's bytes, streamed (tfwidth.artifacts.fingerprint); None when it does not exist."""
    fp = fingerprint(path)
    return None if fp is None else fp["sha256"]


def run_digest(run) -> str | None:
    """A trained supernet run directory: its checkpoint indexes (a TF bundle index holds every tensor's crc32c, so it
    changes with the weights), the checkpoint record and stats.json (epochs, probe); None when it holds no checkpoint."""
    run = Path(run)
    index = sorted(run.glob("ckpt/*.index")) + sorted(run.glob("*.index"))
    if not index:
        return None
    h = hashlib.sha256()
    for p in index + [run / "ckpt" / "checkpoint.json", run / "stats.json"]:
        h.update(p.name.encode())
        h.update((file_digest(p) or "missing").encode())
    return h.hexdigest()


def dataset_digest(spec: str) -> str:
    """A dataset spec as the CLIs take it: npz:PATH by the file's bytes, folder:PATH by every file's path (relative
    to the folder) and bytes, so a renamed or re-encoded image changes it; other kinds by their text."""
    if spec.startswith("npz:"):
        return file_digest(spec[4:]) or f"missing {spec}"
    if spec.startswith("folder:"):
        root = Path(spec[7:])
        if not root.is_dir():
            return f"missing {spec}"
        h = hashlib.sha256()
        for p in sorted(f for f in root.rglob("*") if f.is_file()):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
        return h.hexdigest()
    return spec


def code_digest(*sources: str) -> str:
    """sha256 over the named source files (paths relative to the repository, or directories: every .py in them),
    with BASE_CODE; what a change of the code that computes a result looks like."""
    files: list[Path] = []
    for s in BASE_CODE + tuple(sources):
        p = ROOT / s
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    h = hashlib.sha256()
    for p in sorted(set(files)):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update((file_digest(p) or "missing").encode())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    """The repository's HEAD commit (recorded beside a key, for the reader), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def key_of(parts: dict) -> str:
    return hashlib.sha256(canonical(parts).encode()).hexdigest()[:16]


def _flatten(obj, prefix=""):
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: canonical(obj)}


def changed(old: dict | None, new: dict) -> list[str]:
    """The names of the parts that differ between two part dicts (dotted, e.g. 'inputs.table', 'args.epochs')."""
    if old is None:
        return ["no record of its inputs"]
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def describe_change(old: dict | None, new: dict) -> str:
    """'<part>, <part> changed', or 'no record of its inputs' (a result from before keys were recorded)."""
    if old is None:
        return "no record of its inputs"
    return f"{', '.join(changed(old, new)) or 'key format'} changed"


def check(path, parts: dict, what: str | None = None, say=print, leftover: bool = False) -> bool:
    """True when the record at ``path`` was made from these parts; otherwise False, after one line
    "recomputed: <what>: <what changed>" (when there is no record: nothing, a first run, unless ``leftover``, i.e.
    a result is there without a record of what it was computed from)."""
    p = Path(path)
    if not p.exists():
        if leftover:
            say(f"recomputed: {what or p.name}: no record of its inputs")
        return False
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        rec = {}
    if rec.get("key") == key_of(parts):
        return True
    say(f"recomputed: {what or p.name}: {describe_change(rec.get('parts') if isinstance(rec, dict) else None, parts)}")
    return False


def load(path, parts: dict, what: str | None = None, say=print):
    """The result stored at ``path`` if its key matches these parts, else None (see check)."""
    if not check(path, parts, what, say):
        return None
    return json.loads(Path(path).read_text()).get("result")


def store(path, parts: dict, result=None) -> None:
    """Write {key, parts, commit, result} atomically (a kill leaves the old record or the new one, never half)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key_of(parts), "parts": parts, "commit": git_commit(), "result": result},
                              indent=1, default=str))
    os.replace(tmp, p)


def usage_error(message: str):
    """Bad input to a benchmark: one line on stderr starting 'error: ', exit code 2 (the house rule), no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def relative(path) -> str:
    """A path as a report may show it: relative to the current directory when under it, else just its name (no
    machine-specific absolute path lands in a report)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name


if __name__ == "__main__":  # python tools/_cache.py FILE...: the digests a key would use
    for f in sys.argv[1:]:
        print(file_digest(f) if Path(f).is_file() else run_digest(f), f)
