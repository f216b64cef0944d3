"""samples.jsonl: one self-contained JSON object per timed configuration, appended and flushed as it is measured.

A run killed at any moment leaves at most one partial last line: every reader (``read_records``, used by the
profiler's resume and by tfwidth's fit and refinement) skips it, and on restart the profiler cuts it off (with a
warning) and skips the plan indices already present, so nothing is lost or timed twice.

Record kinds (docs/interfaces.md): "sample" (a plan configuration), "reference" (the plan's reference configuration,
re-timed every K samples), "repeat" (an earlier sample of the same run timed again, to measure the noise) and
"noise" (one per run, at its end: the summary of that run's references and repeats, see ``noise_summary``).
Only "sample" records are fitted; "noise" records carry ``widths`` and ``ms`` as null so readers of older versions,
which require both keys, skip them like any non-sample record.

Only the standard library here: this module is imported by the adb runner on the host and by tfwidth.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys

from device_profiler.errors import UsageError


class CorruptLine(ValueError):
    """A line that is not a JSON object and is not the last line of its file (which a kill may have cut)."""

    def __init__(self, path, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


def read_records(path) -> tuple[list[tuple[int, dict]], dict | None]:
    """Every record of a JSONL file: ([(line number, object)], tail). ``tail`` is None, or, when the last non-blank
    line is not a JSON object (a run killed mid-write), {"line": its number, "offset": its first byte, "bytes": its
    length}: that line is left out. Raises CorruptLine for any other unreadable line and OSError if unreadable."""
    with open(path, "rb") as f:
        data = f.read()
    raw = data.split(b"\n")
    last = max((n for n, line in enumerate(raw) if line.strip()), default=-1)
    out, tail, offset = [], None, 0
    for n, line in enumerate(raw):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            d = json.loads(line.decode("utf-8"))
            reason = None if isinstance(d, dict) else "not a JSON object"
        except (ValueError, UnicodeDecodeError):
            reason = "not valid JSON"
        if reason is not None:
            if n == last:
                tail = {"line": n + 1, "offset": start, "bytes": len(data) - start}
                break
            raise CorruptLine(path, n + 1, reason)
        out.append((n + 1, d))
    return out, tail


def plan_fingerprint(plan: dict) -> str:
    """A short hash of what a plan asks to time (its configurations and reference): two plans with the same
    fingerprint time the same configurations under the same indices."""
    body = json.dumps({"configs": plan["configs"], "reference": plan["reference"]}, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def recover(path: str, space_hash: str, plan: str | None = None) -> tuple[set, float | None]:
    """Plan indices already in `path` and the latest reference min ms; drops a truncated last line in place.

    ``plan``: this plan's fingerprint; samples stamped with another plan's are refused (resuming into them would
    skip, by index, configurations this plan never timed). Samples without a fingerprint (older profilers) pass."""
    if not os.path.exists(path):
        return set(), None
    try:
        records, tail = read_records(path)
    except CorruptLine as e:
        raise UsageError(f"{path} line {e.line} is not a sample ({e.reason}); write to a new --out file") from None
    if tail is not None:
        print(f"warning: {path}: skipping a truncated last line ({tail['bytes']} bytes) left by an interrupted run",
              file=sys.stderr)
    done, ref = set(), None
    for n, d in records:
        try:
            kind, index, h = d["kind"], int(d["index"]), d["space_hash"]
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path} line {n} is not a sample ({e}); write to a new --out file") from None
        if h != space_hash:
            raise UsageError(f"{path} holds samples of space {h} but the template is for space {space_hash}; "
                             f"write to a new --out file")
        theirs = d.get("plan")
        if plan is not None and theirs is not None and theirs != plan:
            raise UsageError(f"{path} holds samples of another plan (fingerprint {theirs}, this plan's {plan}); "
                             f"write to another --out file")
        if kind == "sample":
            done.add(index)
        elif kind == "reference" and d.get("status") == "ok" and not d.get("discarded"):
            ref = d["ms"]["min"]  # a discarded attempt's reference corrected no sample: not the level to go on at
    # only now, once the file is known to be ours: cut the partial line, and end a last line that lacks its newline
    # (a hand-edited file) so the next record does not run into it
    if tail is not None:
        with open(path, "r+b") as f:
            f.truncate(tail["offset"])
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            missing_newline = f.read(1) != b"\n"
        else:
            missing_newline = False
    if missing_newline:
        with open(path, "ab") as f:
            f.write(b"\n")
    return done, ref


# ---- devices -----------------------------------------------------------------------------------------------------
# The fields of a sample's "device" (timing.describe_device, adb's describe) that name one unit rather than its kind:
# a fleet of identical devices differs in these and nothing else.
IDENTITY_KEYS = ("hostname", "serial")


def device_description(rec: dict) -> str | None:
    """What kind of device timed a record, as one string ("x86_64, AMD EPYC, Linux-6.18.44-fc-v1272-x86_64-with-glibc2.36"):
    its "device" fields but the unit's name (IDENTITY_KEYS). None for records without one (older files, synthetic
    ones)."""
    dev = rec.get("device")
    if not isinstance(dev, dict):
        return None
    vals = [str(v) for k, v in dev.items() if k not in IDENTITY_KEYS and v not in (None, "")]
    return ", ".join(vals) or None


def device_key(rec: dict) -> tuple:
    """Which unit timed a record: (its hostname (a phone's serial), the cores it was pinned to). Two processes of one
    machine pinned to different cores count as two devices (tools/fleet_profile.py times a fleet of cores)."""
    dev = rec.get("device") if isinstance(rec.get("device"), dict) else {}
    cpus = rec.get("cpus")
    return (str(dev.get("hostname") or dev.get("serial") or "unknown device"),
            tuple(cpus) if isinstance(cpus, list) else None)


def device_labels(keys) -> dict:
    """{device_key: name to show}: the hostname, followed by its cores where one hostname timed on several
    ("pi-2"; "bench cpus 1" beside "bench cpus 0")."""
    keys = sorted(set(keys), key=lambda k: (k[0], k[1] or ()))
    pinnings: dict = {}
    for host, cpus in keys:
        pinnings.setdefault(host, set()).add(cpus)
    return {(host, cpus): host if len(pinnings[host]) == 1 else
            f"{host} cpus {','.join(map(str, cpus)) if cpus else 'unpinned'}" for host, cpus in keys}


# ---- noise -------------------------------------------------------------------------------------------------------
def _ok_ms(d: dict, statistic: str) -> float | None:
    ms = d.get("ms")
    v = ms.get(statistic) if d.get("status", "ok") == "ok" and isinstance(ms, dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


def _ref(d: dict) -> float | None:
    r = d.get("ref_ms")
    return float(r) if isinstance(r, (int, float)) and math.isfinite(r) and r > 0 else None


def _repeat_records(records: list[dict], statistic: str) -> list[tuple[dict, dict]]:
    """(sample, its repeat) for every "repeat" record whose sample (same run and index) has a timing."""
    first = {}
    for d in records:
        if d.get("kind") == "sample" and _ok_ms(d, statistic) is not None:
            first[(d.get("run"), d.get("index"))] = d
    return [(first[(d.get("run"), d.get("index"))], d) for d in records
            if d.get("kind") == "repeat" and _ok_ms(d, statistic) is not None
            and (d.get("run"), d.get("index")) in first]


def repeat_pairs(records: list[dict], statistic: str = "min", drift: bool = True) -> list[tuple[float, float]]:
    """(first timing, repeat) of every "repeat" record and the sample it repeats (same run and index). With
    ``drift``, each is brought to the device speed of its own reference (ms / ref_ms, times the median ref_ms of the
    pairs) when both have one: the difference is then the noise the fit's drift correction cannot remove; without
    it, the raw timings' difference."""
    raw = _repeat_records(records, statistic)
    refs = [r for a, b in raw for r in (_ref(a), _ref(b)) if r is not None]
    level = statistics.median(refs) if refs and drift else None
    out = []
    for a, b in raw:
        ya, yb = _ok_ms(a, statistic), _ok_ms(b, statistic)
        ra, rb = _ref(a), _ref(b)
        if level is not None and ra is not None and rb is not None:
            ya, yb = ya * level / ra, yb * level / rb
        out.append((ya, yb))
    return out


def _median_rel(pairs) -> float | None:
    rel = sorted(abs(a - b) / (0.5 * (a + b)) for a, b in pairs)
    return rel[len(rel) // 2] if rel else None


def drift_choice(records: list[dict], statistic: str = "min") -> dict:
    """Whether dividing each timing by its latest reference timing (drift correction) makes the timings more
    repeatable, decided on the records' own repeats: {"drift": False when the repeats' median relative difference
    is larger corrected than raw, True when not (a tie keeps the correction, the default before this choice), None
    without repeats that have references (no evidence); "raw" and
    "corrected": those medians; "repeats": how many pairs}. Why not always correct: the reference is timed every ~25
    samples, and when the device's speed changes faster than that (a shared machine) or hardly at all (a quiet one),
    its latest reading adds its own noise to every sample instead of removing drift (measured: docs/benchmarks.md,
    "Drift correction, decided by the repeats"); on a device that slows for minutes (a phone warming up) it removes
    it."""
    pairs = [(a, b) for a, b in _repeat_records(records, statistic) if _ref(a) is not None and _ref(b) is not None]
    if not pairs:
        return {"drift": None, "raw": None, "corrected": None, "repeats": 0}
    raw = _median_rel([(_ok_ms(a, statistic), _ok_ms(b, statistic)) for a, b in pairs])
    corrected = _median_rel([(_ok_ms(a, statistic) / _ref(a), _ok_ms(b, statistic) / _ref(b)) for a, b in pairs])
    return {"drift": bool(corrected <= raw), "raw": raw, "corrected": corrected, "repeats": len(pairs)}


def reference_drifts(records: list[dict]) -> list[float]:
    """Every kept reference timing's relative deviation from its run's median reference (min ms); references of
    re-timing attempts that were not kept ("discarded") are left out: the figures describe the samples kept."""
    runs = {}
    for d in records:
        v = _ok_ms(d, "min") if d.get("kind") == "reference" and not d.get("discarded") else None
        if v is not None:
            runs.setdefault(d.get("run"), []).append(v)
    return [v / statistics.median(vs) - 1.0 for vs in runs.values() for v in vs]


def noise_summary(records: list[dict], statistic: str = "min", drift: bool | None = None) -> dict:
    """The A/A-style figures of a run (or a whole file: references are compared within their own run):
    ``repeats`` pairs, their median and 90th-percentile relative difference and their RMSE in ms (like
    tools/bench_latency.py's A/A floor), the reference drift range [min, max] and its largest magnitude, and how
    many samples were re-timed or kept although their window stayed noisy. Figures are None where nothing measured
    them (files from profilers that did not repeat). ``drift``: the repeats compared drift-corrected (True) or raw
    (False); None: as ``drift_choice`` decides (corrected without evidence), the way the fit reads them. The figures
    say which (``drift``)."""
    if drift is None:
        drift = drift_choice(records, statistic)["drift"] is not False
    pairs = repeat_pairs(records, statistic, drift)
    rel = sorted(abs(a - b) / (0.5 * (a + b)) for a, b in pairs)
    drifts = reference_drifts(records)
    samples = [d for d in records if d.get("kind") == "sample"]

    def q(p):
        return rel[min(len(rel) - 1, int(round(p * (len(rel) - 1))))] if rel else None

    return {"statistic": statistic, "drift": drift, "repeats": len(pairs), "repeat_rel_diff_median": q(0.5),
            "repeat_rel_diff_p90": q(0.9),
            "repeat_rmse_ms": math.sqrt(sum((a - b) ** 2 for a, b in pairs) / len(pairs)) if pairs else None,
            "repeat_mean_ms": sum(a + b for a, b in pairs) / (2 * len(pairs)) if pairs else None,
            "references": len(drifts), "reference_drift": [min(drifts), max(drifts)] if drifts else None,
            "reference_drift_max": max(abs(x) for x in drifts) if drifts else None,
            "retimed_samples": sum(1 for d in samples if d.get("retimed")),
            "noisy_samples": sum(1 for d in samples if (d.get("window") or {}).get("noisy")),
            **_precision_summary(samples)}


def _precision_summary(samples: list[dict]) -> dict:
    """How many samples were timed to a stated precision (device_profiler --precision) and how many reached it."""
    prec = [d["precision"] for d in samples if isinstance(d.get("precision"), dict)]
    if not prec:
        return {"precision_target": None, "precision_met": None, "precision_samples": 0}
    reached = sorted(p["reached"] for p in prec if p.get("reached") is not None)
    return {"precision_target": max(p["target"] for p in prec), "precision_samples": len(prec),
            "precision_met": sum(1 for p in prec if p.get("met")),
            "precision_reached_median": reached[len(reached) // 2] if reached else None,
            "blocks_mean": sum(p["blocks"] for p in prec) / len(prec)}


def format_noise(n: dict) -> str:
    """One line: the figures of ``noise_summary``."""
    parts = []
    if n.get("repeats"):
        how = {True: ", drift-corrected", False: ", raw: drift correction would add noise"}.get(n.get("drift"), "")
        parts.append(f"{n['repeats']} repeats differ by {100 * n['repeat_rel_diff_median']:.1f}% (median{how}; 90th "
                     f"percentile {100 * n['repeat_rel_diff_p90']:.1f}%, RMSE {n['repeat_rmse_ms']:.4f} ms)")
    else:
        parts.append("no repeated configurations")
    if n.get("references"):
        lo, hi = n["reference_drift"]
        parts.append(f"reference drift {100 * lo:+.1f}% to {100 * hi:+.1f}% over {n['references']} timings")
    else:
        parts.append("no reference timings")
    if n.get("precision_samples"):
        parts.append(f"{n['precision_met']} of {n['precision_samples']} samples timed to their minimum within "
                     f"{100 * n['precision_target']:g}% (median {100 * n['precision_reached_median']:.2f}%, "
                     f"{n['blocks_mean']:.1f} blocks each)")
    if n.get("retimed_samples") or n.get("noisy_samples"):
        parts.append(f"{n['retimed_samples']} samples re-timed, {n['noisy_samples']} kept from windows that stayed "
                     f"noisy")
    return "; ".join(parts)


class Writer:
    """Appends one line per sample; flushed and synced so a kill (or power loss) loses at most the line in flight."""

    def __init__(self, path: str):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")

    def write(self, obj: dict) -> None:
        self.write_many([obj])

    def write_many(self, objs: list) -> None:
        """Several records in one write and one sync (a window of samples accepted together)."""
        if not objs:
            return
        self.f.write("".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs))
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
