"""The latency model: a table of per-layer times fitted from whole-network timings on the device. numpy/scipy only.

latency(w) = sum_t T_t[c of the 1 or 2 width variables term t touches]  (+ a constant, folded into the first term)

The terms are the architecture's (``space.architecture.latency_terms``): MobileNetV1's are
T_stem[c_1] + sum_i T_block_i[c_(i-1), c_i] + T_head[c_n].

Layers are never timed alone (that misses caching, fusion and threading effects): the device times whole variants
(samples.jsonl, see docs/interfaces.md) and the table is the non-negative least-squares solution of the resulting
linear system, regularised towards "a wider layer is not faster".

    python -m tfwidth.latency fit samples.jsonl -o table.json [--validation val.jsonl | --holdout 0.1] [--plot fit.png]
    python -m tfwidth.latency validate table.json samples.jsonl
    python -m tfwidth.refine --table table.json --samples samples.jsonl --template template.tflite \
        --stats run/stats.json --target-ms 3.0 -o table_refined.json        (tfwidth/refine.py)
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from tfwidth.artifacts import atomic_write_bytes, check_space, figure_png, pyplot, read_json, write_json
from device_profiler import console
from device_profiler.checks import count, number, output_file
from tfwidth.errors import ArgumentParser, UsageError
from tfwidth import arch
from tfwidth.space import GraphCost, SearchSpace, preset

STATISTICS = ("min", "median", "mean")
MIX_KEYS = ("space_hash", "runtime", "runtime_version", "format", "threads", "kernels")
REG_GRID = (0.0, 1.0, 3.0, 10.0)
DEFAULT_REG = 3.0  # used when there is nothing to choose it on (no holdout, no validation file)
# Weight of a plain smoothness term on every neighbour difference. It is far too small to bend entries the samples
# determine (each is in ~N*15/#entries rows of weight 1) but it makes the problem strictly convex, so entries that
# no sample or only a sum of several entries determines get their neighbours' values instead of arbitrary ones.
ANCHOR = 1e-2
RIDGE = 1e-4
# Weight of the pull of every entry towards its term's low-dimensional model (see _TableLayout.prior_basis). The table
# has ~2,400 entries for ~2,000 samples, so without a prior the entries a sample mix leaves loosely determined take
# whatever the noise says; the prior lowers the held-out error most where samples are few. The weight is chosen on
# validation data from PRIOR_GRID like the hinge's; PRIOR when there is nothing to choose on; 0 (off) is in the grid
# for samples that pin every entry (else the prior biases a table whose true shape it cannot express). 10 was never
# chosen on validation splits and conditions the problem badly (the slowest fit), so the grid stops at 3.
# (Measured: docs/benchmarks.md, "Figures behind the fit's defaults".)
PRIOR = 3.0
PRIOR_GRID = (0.0, 1.0, 3.0)
# How residuals are weighted. "absolute": every sample's squared error in ms counts the same, so the widest networks
# (10-40x the narrowest's latency) decide the fit and a 0.02 ms miss on a 0.1 ms network (20%) is as cheap as on a
# 3 ms one, which left the narrowest uniform networks far off (docs/benchmarks.md, "Figures behind the fit's
# defaults"). "relative":
# squared errors relative to each sample's latency (weights (mean / y)^2): the device's timing noise is roughly a
# constant share of the latency (min of N pinned: ~1-2%), so this is also the maximum-likelihood weighting.
# Chosen on validation data like the weights above; SCALE when there is nothing to choose on.
SCALES = ("relative", "absolute")
SCALE = "relative"
# Weight of the pull towards another device's table (fit --prior-table) when there is no validation data to choose
# it on: few samples of a new device cannot hold out enough to choose anything (see PRIOR_TABLE_GRID).
PRIOR_TABLE = 3.0
PRIOR_TABLE_GRID = (1.0, 3.0, 10.0)
# Whether terms with the same signature (LatencyTerm.signature; a MobileNetV1 block's: input and output width
# choices, stride, map sizes: the same layer, e.g. its five stride-1 blocks at the 512-channel level) share one
# table in the prior (_TableLayout.prior_basis):
# chosen on validation data like the weights above (False first: a tie keeps the per-layer prior); False when there
# is nothing to choose on. Why offer it: each of those blocks' 196 entries sits in ~5 samples per 1,000, and at
# 128 px the table fits test configurations it was given far better than ones it was not (the per-entry structure
# of the device, e.g. XNNPACK's kernels at each channel pair, is not the per-layer shape); identical layers run the
# same kernels, so their samples can pool. Measured gain: docs/benchmarks.md (latency model).
SHARED_CHOICES = (False, True)
SHARED = False


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ---- samples -------------------------------------------------------------------------------------------------------
def read_records(path, warn=_warn) -> list[tuple[int, dict]]:
    """(line number, record) of every line of a samples file, with a partial last line (a killed run) skipped with
    a warning; any other unreadable line is a UsageError. The one reader of samples files (device_profiler's)."""
    from device_profiler import samples as dsamples
    path = Path(path)
    if not path.exists():
        raise UsageError(f"samples file {path} does not exist")
    if path.is_dir():
        raise UsageError(f"samples file {path} is a directory; give the samples.jsonl itself")
    try:
        records, tail = dsamples.read_records(path)
    except dsamples.CorruptLine as e:
        raise UsageError(f"{path}:{e.line} is {e.reason}; the file is corrupted: remove that line") from None
    except OSError as e:
        raise UsageError(f"cannot read samples file {path} ({e.strerror or e})") from None
    if tail is not None:
        warn(f"{path}:{tail['line']}: last line is truncated (a run was interrupted); skipped")
    return records


def load_samples(path, allow_mixed: bool = False, warn=_warn) -> list[dict]:
    """The successful timings of plan configurations in a samples.jsonl (reference re-timings, repeats, noise
    summaries and failed variants are left out: the reference's drift is already carried by each sample's ref_ms).
    ms.median may be null (benchmark_model builds that print no percentiles; see usable_statistic); min and mean
    must be positive numbers."""
    path = Path(path)
    records = read_records(path, warn)
    out, failed = [], 0
    for n, d in records:
        if "widths" not in d or "ms" not in d:
            raise UsageError(f"{path}:{n} is not a sample (needs widths and ms); pass a samples.jsonl from "
                             f"device_profiler")
        if d.get("kind", "sample") != "sample":
            continue
        w = d["widths"]
        if not isinstance(w, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in w):
            raise UsageError(f"{path}:{n}: widths {w!r} are not whole channel counts; the file is corrupted: "
                             f"delete that line or re-time it")
        if d.get("status", "ok") != "ok":
            failed += 1
            continue
        ms = d["ms"]
        for k in STATISTICS:
            v = ms.get(k) if isinstance(ms, dict) else None
            if v is None and k == "median" and isinstance(ms, dict):
                continue
            if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise UsageError(f"{path}:{n}: timing ms.{k} is {v!r}, not a positive number; re-time that "
                                 f"configuration or delete the line")
        ref = d.get("ref_ms")
        if ref is not None and (not isinstance(ref, (int, float)) or not math.isfinite(ref) or ref <= 0):
            raise UsageError(f"{path}:{n}: ref_ms is {ref!r}, not a positive number; delete the line or re-time")
        d["_where"] = f"{path}:{n}"
        out.append(d)
    if failed:
        warn(f"{path}: {failed} failed sample(s) left out")
    if not allow_mixed:
        check_uniform(out)
    return out


def usable_statistic(statistic: str, samples: list[dict], warn=_warn) -> str:
    """``statistic``, or min when it is the median and some samples have none (benchmark_model builds that print
    no percentiles record ms.median = null): said in a warning, and the table records the statistic it used."""
    if statistic == "median":
        missing = sum(1 for d in samples if d["ms"].get("median") is None)
        if missing:
            warn(f"{missing} of {len(samples)} samples have no median (a benchmark_model build that prints no "
                 f"percentiles): fitting the min instead")
            return "min"
    return statistic


def check_uniform(samples: list[dict]) -> None:
    """Refuse (UsageError) samples that mix spaces, runtimes (or their versions), formats, thread counts, kernels or
    kinds of device (device_profiler.samples.device_description: the device's fields but its name, so samples of
    several identical devices, a fleet, pass): one table models one device setting."""
    from device_profiler import samples as dsamples
    for key in MIX_KEYS:
        seen = {}
        for d in samples:
            v = d.get(key) if key != "kernels" else d.get(key) or "default"  # older profilers ran the default
            seen.setdefault(json.dumps(v), d["_where"] if "_where" in d else "?")
        if len(seen) > 1:
            vals = ", ".join(f"{json.loads(v)} ({w})" for v, w in list(seen.items())[:3])
            raise UsageError(f"samples mix several {key} values: {vals}; fit one device setting at a time, "
                             f"or pass --allow-mixed")
    kinds: dict = {}
    for d in samples:
        desc = dsamples.device_description(d)  # None: a file that does not say (older profilers)
        if desc is not None:
            kinds.setdefault(desc, d)
    if len(kinds) > 1:
        names = dsamples.device_labels(dsamples.device_key(d) for d in kinds.values())
        vals = " and ".join(f"'{desc}' ({names[dsamples.device_key(d)]}, {d.get('_where', '?')})"
                            for desc, d in list(kinds.items())[:3])
        raise UsageError(f"samples come from different kinds of device: {vals}; fit each kind on its own samples "
                         f"(one table each), or pass --allow-mixed to fit one table over them")


def measured(samples: list[dict], statistic: str = "min", drift: bool = True,
             ref_ms: float | None = None) -> np.ndarray:
    """Each sample's timing, scaled by ref_ms / (its ref_ms) when drift correction is on (a sample timed while the
    device ran 5% slow, per its latest reference timing, is scaled down 5%). ``ref_ms`` is the speed level to bring
    every sample to: default the median reference of these samples; pass a table's level (``reference_level`` of
    its training samples, kept in ``table.fit["ref_ms"]``) to compare other files with it. A per-file level would
    cancel exactly the difference the reference measured: a held-out file timed faster than the training file would
    read as a systematic error of the fit (measured: docs/benchmarks.md, "Figures behind the fit's defaults")."""
    if statistic not in STATISTICS:
        raise UsageError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    for d in samples:
        if d["ms"].get(statistic) is None:
            raise UsageError(f"{d.get('_where', 'a sample')}: has no ms.{statistic} (a benchmark_model build that "
                             f"prints no percentiles); fit and check tables on --statistic min")
    y = np.array([float(d["ms"][statistic]) for d in samples])
    if drift:
        ref = np.array([float(d["ref_ms"]) if d.get("ref_ms") is not None else np.nan for d in samples])
        ok = np.isfinite(ref)
        level = reference_level(samples) if ref_ms is None else float(ref_ms)
        if ok.any() and level is not None:
            y = np.where(ok, y * level / np.where(ok, ref, 1.0), y)
    return y


def reference_level(samples: list[dict]) -> float | None:
    """The median reference timing of samples (None without any): the device speed a table fitted on them predicts."""
    ref = [float(d["ref_ms"]) for d in samples if d.get("ref_ms") is not None]
    return float(np.median(ref)) if ref else None


def find_space(samples_path, samples: list[dict], space_path=None) -> SearchSpace:
    """The search space of a samples file: --space, else a plan.json beside it, else a preset with the same hash."""
    if space_path is not None:
        return SearchSpace.load(space_path)
    hashes = {d.get("space_hash") for d in samples}
    plan = Path(samples_path).with_name("plan.json")
    if plan.exists():
        s = SearchSpace.load(plan)
        if s.space_hash in hashes:
            return s
    for name in arch.presets():
        for res in (None, 32, 64, 96, 128, 160, 192, 224, 256):
            s = preset(name, resolution=res)
            if s.space_hash in hashes:
                return s
    raise UsageError(f"cannot tell the search space of {samples_path} (space_hash {', '.join(map(str, hashes))}); "
                     f"pass --space space.json (or the plan.json it was timed from)")


# ---- the table -----------------------------------------------------------------------------------------------------
class LatencyTable:
    """Latency in ms as one table per term of the space's architecture (``space.architecture.latency_terms``): a
    vector over the choices of the term's one width variable, or a matrix over its two. MobileNetV1: stem[c_1] (k_1,),
    blocks[i-1][c_(i-1), c_i] (k_(i-1), k_i), head[c_n] (k_n,).

    Built from the terms grouped as table.json holds them (``parts``, the architecture's ``table_layout``;
    MobileNetV1: ``LatencyTable(space, stem, blocks, head, const=...)``); each group is also an attribute
    (``table.stem``, ``table.blocks``, ``table.head``) and ``terms`` lists them all in the architecture's order."""

    def __init__(self, space: SearchSpace, *parts, const: float = 0.0, format: str | None = None,
                 runtime: str | None = None, runtime_version: str | None = None, threads=None,
                 statistic: str = "min", drift: bool = True, unconstrained=(), fit: dict | None = None):
        self.space = space
        self._spec = space.architecture.latency_terms(space)
        self._layout = space.architecture.table_layout(space)
        if len(parts) != len(self._layout):
            raise UsageError(f"a latency table of {space.arch} has {len(self._layout)} parts "
                             f"({', '.join(k for k, _ in self._layout)}), not {len(parts)}")
        self.parts = {key: [np.asarray(p, float) for p in part] if isinstance(at, slice) else np.asarray(part, float)
                      for (key, at), part in zip(self._layout, parts)}
        self.const = float(const)
        self.format, self.runtime, self.runtime_version, self.threads = format, runtime, runtime_version, threads
        self.statistic, self.drift = statistic, drift
        self.unconstrained = [dict(u) for u in unconstrained]
        self.fit = dict(fit or {})
        ks = space.num_choices
        terms = self.terms
        if len(terms) != len(self._spec) or any(
                a is None or a.shape != tuple(ks[v] for v in t.variables) for a, t in zip(terms, self._spec)):
            raise UsageError("latency table does not have the shape of its search space; regenerate it")
        if not all(np.isfinite(a).all() for a in terms) or not math.isfinite(self.const):
            raise UsageError("latency table has NaN or infinite entries; refit it with python -m tfwidth.latency fit")

    def __getattr__(self, name):
        # the parts by name (table.stem, ...); only called for names that are not ordinary attributes
        parts = self.__dict__.get("parts", {})
        if name in parts:
            return parts[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def terms(self) -> list:
        """One array per latency term, in the order of ``space.architecture.latency_terms``."""
        out = [None] * len(self._spec)
        for key, at in self._layout:
            out[at] = self.parts[key]
        return out

    def chain(self) -> GraphCost:
        """The table as a GraphCost over the space's edges in ms (the constant folded into the first variable's
        unary term); total(indices) == predict(widths)."""
        edges = self.space.edges
        unary = [np.zeros(k) for k in self.space.num_choices]
        pairwise = [np.zeros((self.space.num_choices[a], self.space.num_choices[b])) for a, b in edges]
        for t, a in zip(self._spec, self.terms):
            if len(t.variables) == 1:
                unary[t.variables[0]] = unary[t.variables[0]] + a
            else:
                e = edges.index(t.variables)
                pairwise[e] = pairwise[e] + a
        unary[0] = unary[0] + self.const
        return GraphCost(tuple(unary), tuple(pairwise), edges)

    def predict(self, widths) -> float:
        idx = self.space.to_indices(widths)
        return self.predict_indices(np.asarray([idx]))[0]

    def predict_indices(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = self.const
        # unary terms first, then pairwise ones: the order of the sum as it always was (bit-equal predictions)
        for arity in (1, 2):
            for t, a in zip(self._spec, self.terms):
                if len(t.variables) == arity:
                    out = out + a[tuple(idx[:, v] for v in t.variables)]
        return out

    def unconstrained_on(self, widths) -> list[dict]:
        """The unconstrained entries a configuration uses."""
        w = self.space.validate(widths)
        used = {(t.name, tuple(w[v] for v in t.variables)) for t in self._spec}
        return [u for u in self.unconstrained if (u["term"], tuple(u["widths"])) in used]

    # ---- serialisation ----------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"kind": "latency_table", "space_hash": self.space.space_hash, "space": self.space.to_json(),
                "unit": "ms", "format": self.format, "runtime": self.runtime,
                "runtime_version": self.runtime_version, "threads": self.threads, "statistic": self.statistic,
                "drift": self.drift, "const": self.const,
                **{key: [a.tolist() for a in part] if isinstance(part, list) else part.tolist()
                   for key, part in self.parts.items()},
                "unconstrained": self.unconstrained, "fit": self.fit}

    @classmethod
    def from_json(cls, d: dict, space: SearchSpace | None = None, what: str = "latency table") -> "LatencyTable":
        if d.get("kind") != "latency_table":
            raise UsageError(f"{what} is not a latency table (kind {d.get('kind')!r}); make one with python -m "
                             f"tfwidth.latency fit")
        if space is None:
            if not isinstance(d.get("space"), dict):
                raise UsageError(f"{what} embeds no space; regenerate it with python -m tfwidth.latency fit")
            space = SearchSpace.from_dict(d["space"], f"{what}'s space")
        check_space(d, space, what)
        try:
            parts = [d[key] for key, _ in space.architecture.table_layout(space)]
            return cls(space, *parts, const=d.get("const", 0.0), format=d.get("format"), runtime=d.get("runtime"),
                       runtime_version=d.get("runtime_version"), threads=d.get("threads"),
                       statistic=d.get("statistic", "min"), drift=d.get("drift", True),
                       unconstrained=d.get("unconstrained", ()), fit=d.get("fit"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UsageError(f"{what} is malformed ({type(e).__name__}: {e}); regenerate it") from None

    def save(self, path) -> None:
        write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path, space: SearchSpace | None = None) -> "LatencyTable":
        # json.loads accepts NaN; the constructor refuses it with a message.
        return cls.from_json(read_json(path, "latency table"), space, f"latency table {path}")


# ---- the fit -------------------------------------------------------------------------------------------------------
class _TableLayout:
    """Where each table entry sits in the unknown vector (the architecture's terms one after the other, each
    row-major over its variables' choices), and the neighbour pairs the regulariser compares."""

    def __init__(self, space: SearchSpace):
        ks = space.num_choices
        self.space, self.ks = space, ks
        self.terms = space.architecture.latency_terms(space)
        self.shapes = [tuple(ks[v] for v in t.variables) for t in self.terms]
        if any(len(sh) not in (1, 2) for sh in self.shapes):
            raise UsageError(f"{space.arch}: a latency term touches 1 or 2 width variables")
        sizes = [int(np.prod(sh)) for sh in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = int(self.offsets[-1])
        small, big = [], []
        for o, sh in zip(self.offsets, self.shapes):
            grid = o + np.arange(int(np.prod(sh))).reshape(sh)
            if len(sh) == 1:
                small.append(grid[:-1])
                big.append(grid[1:])
            else:
                small += [grid[:-1, :].ravel(), grid[:, :-1].ravel()]
                big += [grid[1:, :].ravel(), grid[:, 1:].ravel()]
        small, big = np.concatenate(small), np.concatenate(big)
        m = len(small)
        # D @ x = x[small] - x[big]: > 0 where an entry is slower than its one-step-wider neighbour.
        self.D = sp.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (np.r_[np.arange(m), np.arange(m)], np.r_[small, big])),
                               shape=(m, self.n))
        # terms with the same signature: the same layer at another depth
        sig: dict = {}
        for t, term in enumerate(self.terms):
            if term.signature is not None:
                sig.setdefault(term.signature, []).append(t)
        self.groups = [g for g in sig.values() if len(g) > 1]

    def prior_basis(self, shared: bool = False) -> sp.csr_matrix:
        """[n, p]: per term a model with far fewer coefficients than entries (the architecture's
        ``latency_prior``: for MobileNetV1 a + b*c for stem and head, u[cin] + v[cout] + d*cin*cout for a block).
        ``shared``: terms of one signature group (``groups``) also share a free table of their entries, i.e. each
        such term is that common table plus its own model (see SHARED)."""
        rows, cols, vals = [], [], []
        for o, term in zip(self.offsets, self.terms):
            for f in self.space.architecture.latency_prior(self.space, term):
                rows.append(o + np.arange(len(f)))
                cols.append(np.full(len(f), len(cols)))
                vals.append(np.asarray(f, float))
        p = len(cols)
        for g in (self.groups if shared else ()):
            k = self.offsets[g[0] + 1] - self.offsets[g[0]]
            for t in g:
                rows.append(self.offsets[t] + np.arange(k))
                cols.append(p + np.arange(k))
                vals.append(np.ones(k))
            p += k
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.n, p))

    def vector(self, table: "LatencyTable") -> np.ndarray:
        """The entries of a table with this layout's shape as one vector (its constant folded into the first
        term), the inverse of ``table``. Another space's table is accepted when it is of the same architecture and
        its choices have the same counts per variable (the same network at another resolution): its entries are
        matched by position."""
        if table.space.arch != self.space.arch or tuple(table.space.num_choices) != tuple(self.ks):
            raise UsageError(f"the prior table's space ({table.space.arch}) has {table.space.num_choices} choices per "
                             f"layer, this one ({self.space.arch}) {self.ks}: a prior table must come from the same "
                             f"network's space (any resolution, format or kernels)")
        terms = table.terms
        return np.concatenate([terms[0].ravel() + table.const] + [a.ravel() for a in terms[1:]])

    def table_basis(self, other: "LatencyTable") -> sp.csr_matrix:
        """[n, 2 * terms]: per term that term's entries of ``other`` and a constant, i.e. the new device's term =
        a * the other device's + b. Why per term: int8, other kernels or another resolution change the cost of a
        layer kind (the depthwise conv, a strided block, the classifier) by different factors, but within one term
        they keep the other device's shape over the widths (SIMD steps, cache effects)."""
        v = self.vector(other)
        rows, cols, vals = [], [], []
        for t in range(len(self.offsets) - 1):
            r = np.arange(self.offsets[t], self.offsets[t + 1])
            rows += [r, r]
            cols += [np.full(len(r), 2 * t), np.full(len(r), 2 * t + 1)]
            vals += [v[r], np.ones(len(r))]
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(self.n, 2 * (len(self.offsets) - 1)))

    def columns(self, idx: np.ndarray) -> np.ndarray:
        """[N, terms] unknown index of each term of each configuration."""
        return np.stack([o + np.ravel_multi_index(tuple(idx[:, v] for v in t.variables), sh)
                         for o, t, sh in zip(self.offsets, self.terms, self.shapes)], axis=1)

    def design(self, idx: np.ndarray) -> sp.csr_matrix:
        cols = self.columns(idx)
        N, m = cols.shape
        return sp.csr_matrix((np.ones(N * m), (np.repeat(np.arange(N), m), cols.ravel())), shape=(N, self.n))

    def table(self, x: np.ndarray, **kw) -> LatencyTable:
        """The LatencyTable of the unknown vector ``x``."""
        terms = [x[o:o + int(np.prod(sh))].reshape(sh) for o, sh in zip(self.offsets, self.shapes)]
        parts = [terms[at] for _, at in self.space.architecture.table_layout(self.space)]
        return LatencyTable(self.space, *parts, **kw)

    def entry(self, j: int) -> dict:
        t = int(np.searchsorted(self.offsets, j, side="right") - 1)
        at = np.unravel_index(int(j - self.offsets[t]), self.shapes[t])
        term = self.terms[t]
        return {"term": term.name, "widths": [self.space.choices[v][int(i)] for v, i in zip(term.variables, at)]}


def objective(A, y, D, reg: float, x: np.ndarray, B=None, prior: float = 0.0, theta=None) -> float:
    """The fit's objective (see _solve) at x (and the prior's coefficients theta when prior > 0)."""
    r, d = A @ x - y, D @ x
    h = np.maximum(d, 0.0)
    val = 0.5 * (r @ r) + 0.5 * reg * reg * (h @ h) + 0.5 * ANCHOR ** 2 * (d @ d) + 0.5 * RIDGE ** 2 * (x @ x)
    if prior > 0:
        q = x - B @ theta
        val += 0.5 * prior * prior * (q @ q)
    return float(val)


def _solve(A: sp.csr_matrix, y: np.ndarray, D: sp.csr_matrix, reg: float, x0: np.ndarray | None = None,
           tol: float = 1e-9, B: sp.csr_matrix | None = None, prior: float = 0.0, full: bool = False):
    """argmin_{x >= 0, theta} 1/2 |Ax - y|^2 + reg^2/2 |max(0, Dx)|^2 + ANCHOR^2/2 |Dx|^2 + RIDGE^2/2 |x|^2
                               + prior^2/2 |x - B theta|^2.

    Why this regulariser: the paper asks that a wider layer not be faster. A penalty on the positive part of each
    neighbour difference says exactly that and nothing more: a plain smoothness penalty on every difference would also
    pull legitimately large steps (e.g. where a width crosses a SIMD tile) towards zero and bias the table, and hard
    constraints would let one noisy entry force its whole row. The squared hinge keeps the problem convex and once
    differentiable. The last term (prior > 0) pulls each entry towards a low-dimensional model of its layer whose
    coefficients theta are fitted jointly (B: _TableLayout.prior_basis): the samples decide where the table departs from
    that shape, the prior fills in what they leave loose. It is quadratic, so the problem stays convex.

    How: L-BFGS-B (bounds x >= 0) on the variables scaled by the diagonal of the Hessian (stem and head entries sit in
    ~k times more samples than block entries; unscaled, that spread alone costs thousands of iterations), with a
    short memory (maxcor 5: its per-iteration cost dominates here and longer memories did not save iterations).
    Slower alternatives: scipy's lsq_linear (trf, sparse) for the plain bounded problem alone, and an exact
    active-set Newton with dense Cholesky (every pair of entries co-occurs in some sample, so the normal equations are
    dense, and the bound/hinge sets took many passes to settle); timed: docs/benchmarks.md, "Figures behind the fit's
    defaults".
    Returns x, or (x, theta) with full=True."""
    n = A.shape[1]
    if x0 is None:
        x0 = np.full(n, float(np.mean(y)) / max(1.0, float(A.sum()) / max(A.shape[0], 1)))
    x0 = np.maximum(x0, 0.0)
    use_prior = prior > 0 and B is not None
    p = B.shape[1] if use_prior else 0
    deg = np.asarray(abs(D).sum(axis=0)).ravel()
    diag = np.asarray(A.multiply(A).sum(axis=0)).ravel() + (reg * reg + ANCHOR ** 2) * deg + RIDGE ** 2
    if use_prior:
        diag = np.r_[diag + prior * prior, prior * prior * np.asarray(B.multiply(B).sum(axis=0)).ravel() + RIDGE ** 2]
        # start the coefficients at the least-squares fit of the starting table, not at zero
        BtB = (B.T @ B).toarray() + RIDGE ** 2 * np.eye(p)
        z0 = np.r_[x0, np.linalg.solve(BtB, B.T @ x0)]
    else:
        z0 = x0
    sc = 1.0 / np.sqrt(diag)
    scx = sc[:n]
    As, Ds = (A @ sp.diags(scx)).tocsr(), (D @ sp.diags(scx)).tocsr()
    Bs = (B @ sp.diags(sc[n:])).tocsr() if use_prior else None

    def f(z):
        zx = z[:n]
        r, d = As @ zx - y, Ds @ zx
        h = np.maximum(d, 0.0)
        x = zx * scx
        val = 0.5 * (r @ r) + 0.5 * reg * reg * (h @ h) + 0.5 * ANCHOR ** 2 * (d @ d) + 0.5 * RIDGE ** 2 * (x @ x)
        gx = As.T @ r + Ds.T @ (reg * reg * h + ANCHOR ** 2 * d) + RIDGE ** 2 * x * scx
        if not use_prior:
            return val, gx
        q = x - Bs @ z[n:]
        val += 0.5 * prior * prior * (q @ q)
        t = z[n:] * sc[n:]
        return val + 0.5 * RIDGE ** 2 * (t @ t), np.r_[gx + prior * prior * q * scx,
                                                        -prior * prior * (Bs.T @ q) + RIDGE ** 2 * t * sc[n:]]

    res = minimize(f, z0 / sc, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * n + [(None, None)] * p,
                   options=dict(maxiter=5000, maxcor=5, ftol=tol, gtol=tol * 1e4 * max(1.0, float(np.abs(y).max()))))
    x = np.maximum(res.x[:n] * scx, 0.0)
    return (x, res.x[n:] * sc[n:]) if full else x


def evaluate(table: LatencyTable, samples: list[dict], statistic: str | None = None, drift: bool | None = None) -> dict:
    """How well the table predicts samples: RMSE (ms), NRMSE (RMSE / mean measured), relative errors, and the share
    of samples predicted within +-5% and +-10% of their measurement."""
    y = measured(samples, statistic or table.statistic, table.drift if drift is None else drift,
                 table.fit.get("ref_ms"))
    idx = np.array([table.space.to_indices(d["widths"]) for d in samples], dtype=np.int64).reshape(len(samples), -1)
    return _metrics(table.predict_indices(idx) if len(samples) else np.zeros(0), y)


def evaluate_groups(table: LatencyTable, samples: list[dict]) -> dict:
    """``evaluate`` per group of samples (groups_of: random, the ladder, and the solver's answers this table's
    refinement timed, fit["refine"]["answers"]); groups without samples left out."""
    answers = [r.get("widths") for r in ((table.fit or {}).get("refine") or {}).get("answers", [])]
    masks = groups_of(table.space, samples, answers)
    return {g: evaluate(table, [d for d, k in zip(samples, m) if k]) for g, m in masks.items() if m.any()}


def _metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    if len(y) == 0:
        return {"n": 0}
    err = pred - y
    rel = np.abs(err) / y
    rmse = float(np.sqrt(np.mean(err ** 2)))
    k = int(np.argmax(rel))
    return {"n": int(len(y)), "rmse_ms": rmse, "nrmse": rmse / float(np.mean(y)), "mean_rel_err": float(rel.mean()),
            "max_rel_err": float(rel[k]), "worst_err": float(err[k] / y[k]), "within_5pct": float(np.mean(rel <= 0.05)),
            "within_10pct": float(np.mean(rel <= 0.10))}


GROUPS = ("random", "ladder", "answers")


def groups_of(space: SearchSpace, samples: list[dict], answers=()) -> dict:
    """{group: boolean mask over samples}: "ladder" (the uniform network of a width level, space.ladder()),
    "answers" (widths in ``answers``: the solver's answers, e.g. from a refined table's record) and "random" (the
    rest). Validation reports each group by itself: a table right on random configurations can be wrong exactly on
    the uniform networks targets and baselines are defined by."""
    ladder = set(space.ladder())
    ans = {tuple(int(x) for x in w) for w in answers if w is not None}
    keys = [tuple(d["widths"]) for d in samples]
    is_ans = np.array([k in ans for k in keys], bool)
    is_lad = np.array([k in ladder for k in keys], bool) & ~is_ans
    return {"random": ~(is_ans | is_lad), "ladder": is_lad, "answers": is_ans}


def selection_score(pred: np.ndarray, y: np.ndarray, masks: dict | None = None) -> float:
    """What fit choices (weights, scale) minimise on validation data: the RMS relative error of each group (random
    configurations, the ladder, answers), averaged over the groups present, so the 14 uniform networks weigh as much
    as 200 random configurations and the narrowest networks as much as the widest."""
    rel = (pred - y) / y
    masks = [m for m in (masks or {"all": np.ones(len(y), bool)}).values() if m.any()]
    return float(np.mean([np.sqrt(np.mean(rel[m] ** 2)) for m in masks]))


def relative_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights that make squared residuals relative, scaled to mean-square 1 at the mean latency."""
    return (float(np.mean(y)) / y) ** 2


def _indices(space: SearchSpace, samples: list[dict]) -> np.ndarray:
    out = []
    for d in samples:
        try:
            out.append(space.to_indices(d["widths"]))
        except UsageError as e:
            raise UsageError(f"{d.get('_where', 'sample')}: {e}; the samples were timed for another space") from None
    return np.array(out, dtype=np.int64).reshape(len(samples), space.num_layers)


def fit_table(samples: list[dict], space: SearchSpace, reg: float | None = None, holdout: float = 0.1, seed: int = 0,
              statistic: str = "min", drift: bool = True, validation: list[dict] | None = None,
              grid=REG_GRID, prior: float | None = None, prior_grid=None, weights=None,
              level: float | None = None, scale: str | None = None,
              prior_table: "LatencyTable | None" = None, shared: bool | None = None,
              speed=None) -> tuple[LatencyTable, dict]:
    """Fit the table. Four choices are made on validation data unless given: whether identical blocks share a table
    in the prior (``shared``, SHARED_CHOICES; only where the space has such blocks), the residual ``scale``
    (SCALES), the hinge weight ``reg`` (from ``grid``, at the default prior weight) and then the prior weight
    ``prior`` (from ``prior_grid``; 0 turns the prior off), each minimising ``selection_score`` (relative error,
    per group: random configurations and the uniform ladder count alike). Validated on ``validation`` samples if
    given, else on a ``holdout`` share of ``samples`` (fitted on the rest; the final table is then refitted on all
    samples).

    The prior pulls each entry towards a low-dimensional model of its term: by default each layer's own shape
    (_TableLayout.prior_basis); with ``prior_table`` (another device's table of a space with the same choices) a scale
    and an offset per term of that table (_TableLayout.table_basis), which is what lets ~25-100 samples of a new device
    stand for ~1,000 (fit --prior-table). ``weights`` (one per sample, default 1) multiply each sample's squared
    residual: tfwidth.refine gives the configurations the solver actually picks more say than the plan's.
    ``level``: the reference speed to bring samples to (default their median reference; refine keeps the first
    fit's level, so added samples do not shift every prediction). ``speed`` (one per sample, default 1) divides each
    timing: the speed of the device that timed it against the fleet's median device (fit_fleet). Returns the table
    and a report (figures, choices,
    time); the table's ``fit`` keeps the choices, and the prior table's entries, so that a refit (refine) is the
    same model."""
    t0 = time.perf_counter()
    if len(samples) < 2:
        raise UsageError(f"{len(samples)} usable samples: too few to fit a table; time more configurations")
    if scale is not None and scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    idx = _indices(space, samples)
    if drift and level is None:
        level = reference_level(samples)
    level = level if drift else None
    y = measured(samples, statistic, drift, level)
    if speed is not None:
        speed = np.asarray(speed, float)
        if speed.shape != (len(samples),) or not np.isfinite(speed).all() or (speed <= 0).any():
            raise UsageError(f"fit speeds must be {len(samples)} positive numbers, one per sample")
        y = y / speed
    lay = _TableLayout(space)
    A = lay.design(idx)
    user_w = np.ones(len(samples))
    if weights is not None:
        user_w = np.asarray(weights, float)
        if user_w.shape != (len(samples),) or not np.isfinite(user_w).all() or (user_w <= 0).any():
            raise UsageError(f"fit weights must be {len(samples)} positive numbers, one per sample")
    if prior_table is not None:
        bases = {False: lay.table_basis(prior_table)}  # another device's table: its terms already differ per block
        default_prior = PRIOR_TABLE
        prior_grid = PRIOR_TABLE_GRID if prior_grid is None else prior_grid
    else:
        opts = (SHARED_CHOICES if shared is None else (bool(shared),)) if lay.groups else (False,)
        bases = {sh: lay.prior_basis(sh) for sh in opts}
        default_prior = PRIOR
        prior_grid = PRIOR_GRID if prior_grid is None else prior_grid

    def system(rows: np.ndarray, sc: str):
        # weighted least squares = rows scaled by sqrt(weight); the metrics stay on the unweighted timings
        w = user_w[rows] * (relative_weights(y[rows]) if sc == "relative" else 1.0)
        sw = np.sqrt(w)
        return (sp.diags(sw) @ A[rows]).tocsr(), sw * y[rows]

    x_start = np.full(lay.n, float(np.mean(y)) / len(lay.terms))
    choose = reg is None or prior is None or scale is None or len(bases) > 1

    val_idx = val_y = val_masks = None
    train = np.arange(len(samples))
    if validation is not None:
        val_idx, val_y = _indices(space, validation), measured(validation, statistic, drift, level)
        val_masks = groups_of(space, validation)
    elif choose and holdout > 0:
        n_val = int(round(holdout * len(samples)))
        if n_val >= 1 and len(samples) - n_val >= 1:
            perm = np.random.default_rng(seed).permutation(len(samples))
            train, held = np.sort(perm[n_val:]), np.sort(perm[:n_val])
            val_idx, val_y = idx[held], y[held]
            val_masks = groups_of(space, [samples[i] for i in held])

    scores: list[dict] = []
    x0 = x_start
    if choose and val_idx is not None:
        best = None
        for (sh, B), sc in itertools.product(bases.items(), SCALES if scale is None else (scale,)):
            A_tr, y_tr = system(train, sc)
            x = x_start

            def score(r: float, mu: float, x_from: np.ndarray):
                x_new = _solve(A_tr, y_tr, lay.D, r, x_from, B=B, prior=mu)  # warm start from the previous weights
                pred = lay.table(x_new).predict_indices(val_idx)
                row = {"shared": sh, "scale": sc, "reg": r, "prior": mu,
                       "score": selection_score(pred, val_y, val_masks), "rmse_ms": _metrics(pred, val_y)["rmse_ms"]}
                scores.append(row)
                return x_new, row

            mu = default_prior if prior is None else float(prior)
            at = None
            for r in (grid if reg is None else (reg,)):
                x, row = score(float(r), mu, x)
                if at is None or row["score"] < at[0]["score"] - 1e-12:
                    at = (row, x)
            if prior is None:
                x = at[1]
                for q in prior_grid:
                    if float(q) == mu:
                        continue
                    x, row = score(at[0]["reg"], float(q), x)
                    if row["score"] < at[0]["score"] - 1e-12:
                        at = (row, x)
            if best is None or at[0]["score"] < best[0]["score"] - 1e-12:
                best = at
        reg, prior, scale, shared = best[0]["reg"], best[0]["prior"], best[0]["scale"], best[0]["shared"]
        x0 = best[1]  # the final fit on all samples starts from the chosen fit on most of them
    reg = DEFAULT_REG if reg is None else reg
    prior = default_prior if prior is None else prior
    scale = SCALE if scale is None else scale
    if shared is None or shared not in bases:  # nothing chosen, or a space without identical blocks
        shared = SHARED if SHARED in bases else next(iter(bases))
    A_all, y_all = system(np.arange(len(samples)), scale)
    x = _solve(A_all, y_all, lay.D, float(reg), x0, B=bases[shared], prior=float(prior))
    counts = np.bincount(lay.columns(idx).ravel(), minlength=lay.n)
    unconstrained = [lay.entry(j) for j in np.flatnonzero(counts == 0)]
    first = samples[0]
    info = {"reg": float(reg), "prior": float(prior), "scale": scale, "shared": bool(shared), "statistic": statistic,
            "drift": drift,
            "ref_ms": level, "n_samples": len(samples), "n_unknowns": lay.n,
            "n_unconstrained": len(unconstrained), "choices": scores}
    if prior_table is not None:
        info["prior_table"] = {"space_hash": prior_table.space.space_hash, "format": prior_table.format,
                               "runtime": prior_table.runtime, "threads": prior_table.threads,
                               "entries": [round(float(v), 7) for v in lay.vector(prior_table)]}
    table = lay.table(x, format=first.get("format"), runtime=first.get("runtime"),
                      runtime_version=first.get("runtime_version"), threads=first.get("threads"),
                      statistic=statistic, drift=drift, unconstrained=unconstrained, fit=info)
    validation_metrics = groups = None
    if val_idx is not None:
        # the final table on a validation file; on a holdout, the chosen fit that did not see it
        pred = (table if validation is not None or not choose else lay.table(x0)).predict_indices(val_idx)
        validation_metrics = _metrics(pred, val_y)
        groups = {g: _metrics(pred[m], val_y[m]) for g, m in val_masks.items() if m.any()}
    report = dict(info, train=_metrics(table.predict_indices(idx), y), validation=validation_metrics,
                  validation_groups=groups,
                  validation_source=("file" if validation is not None else
                                     f"holdout {len(samples) - len(train)} samples" if val_idx is not None else None),
                  seconds=time.perf_counter() - t0)
    table.fit = {k: v for k, v in report.items() if k != "seconds"}
    return table, report


def prior_table_of(table: LatencyTable) -> "LatencyTable | None":
    """The other device's table a few-shot fit was pulled towards (fit["prior_table"]), rebuilt on this table's
    space so that a refit (tfwidth.refine) keeps the same model; None for an ordinary fit."""
    rec = (table.fit or {}).get("prior_table")
    if not rec:
        return None
    lay = _TableLayout(table.space)
    x = np.asarray(rec["entries"], float)
    if x.shape != (lay.n,):
        raise UsageError("the table's fit.prior_table does not have the shape of its space; refit the table")
    return lay.table(x)


# ---- the fit against the device's noise ----------------------------------------------------------------------
# A table is too poor to solve on when fewer than this share of validation configurations are predicted within
# +-10%: between what a quiet profile of this machine gives and what a busy one did (measured: docs/benchmarks.md,
# "Figures behind the fit's defaults").
MIN_WITHIN_10PCT = 0.75
# ... or when the device's own noise is this large: the median relative difference between two timings of the same
# configuration in one run (device_profiler's repeats, drift-corrected). A quiet run's repeats agree far closer
# (docs/benchmarks.md, "Figures behind the fit's defaults"); the profiler re-times windows above its own 5% threshold.
MAX_REPEAT_NOISE = 0.05
# ... judged on at least this many repeats (the median of two pairs says little; 24 samples, a repeat every 10)
MIN_REPEATS = 10
# ... and a group of validation configurations (the ladder, the answers) by itself on at least this many
MIN_GROUP = 5


def _file_records(paths) -> list[dict]:
    records = []
    for p in paths:
        records += [d for _, d in read_records(p, warn=lambda m: None)]
    return records


def file_noise(paths, statistic: str = "min", drift: bool | None = None) -> dict:
    """device_profiler's noise figures (samples.noise_summary) of the repeats and references in these samples
    files, pooled (references are compared within their own run), with the repeats compared drift-corrected or raw
    (``drift``; None: as file_drift decides). Files from older profilers have none: the figures are then None."""
    from device_profiler import samples as dsamples
    return dsamples.noise_summary(_file_records(paths), statistic, drift)


def file_drift(paths, statistic: str = "min") -> dict:
    """Whether to drift-correct the timings of these samples files, decided on their own repeats
    (device_profiler.samples.drift_choice; correct when they hold no evidence, as before the choice existed)."""
    from device_profiler import samples as dsamples
    choice = dsamples.drift_choice(_file_records(paths), statistic)
    return dict(choice, drift=choice["drift"] is not False, decided=choice["drift"] is not None)


def drift_line(choice: dict) -> str:
    """One line: whether the fit drift-corrected the timings and why (file_drift's figures)."""
    what = "timings divided by their latest reference timing (drift-corrected)" if choice.get("drift") else \
        "raw timings (no drift correction)"
    if not choice.get("decided"):
        return what + (": as asked" if "decided" in choice else "")
    return (f"{what}: the profiler's {choice['repeats']} repeats differ by a median {100 * choice['raw']:.1f}% raw, "
            f"{100 * choice['corrected']:.1f}% corrected")


def judge(validation: dict | None, noise: dict | None, min_within: float = MIN_WITHIN_10PCT,
          max_noise: float = MAX_REPEAT_NOISE, groups: dict | None = None) -> dict:
    """The verdict on a fit: {"poor": bool, "reasons": [one phrase each], thresholds, "rmse_x_noise": validation
    RMSE over the repeats' RMSE (None when either is missing)}. Poor: fewer than ``min_within`` of the validation
    configurations (or of any group of them, see groups_of: the uniform ladder by itself) predicted within +-10%,
    or (on MIN_REPEATS repeats or more) a median repeat difference above ``max_noise``."""
    reasons = []
    if validation and validation.get("n"):
        if validation["within_10pct"] < min_within:
            reasons.append(f"{100 * validation['within_10pct']:.0f}% of {validation['n']} validation configurations "
                           f"within +-10% (needs {100 * min_within:.0f}%)")
    for g, m in (groups or {}).items():
        if g != "random" and m.get("n", 0) >= MIN_GROUP and m["within_10pct"] < min_within:
            reasons.append(f"{100 * m['within_10pct']:.0f}% of the {m['n']} {GROUP_NAMES[g]} within +-10% (needs "
                           f"{100 * min_within:.0f}%; worst {100 * m['worst_err']:+.0f}%)")
    rel = (noise or {}).get("repeat_rel_diff_median")
    if rel is not None and noise["repeats"] >= MIN_REPEATS and rel > max_noise:
        reasons.append(f"two timings of the same configuration differ by {100 * rel:.1f}% (median of "
                       f"{noise['repeats']} repeats; at most {100 * max_noise:.0f}%)")
    aa = (noise or {}).get("repeat_rmse_ms")
    ratio = validation["rmse_ms"] / aa if validation and validation.get("n") and aa else None
    return {"poor": bool(reasons), "reasons": reasons, "min_within_10pct": min_within,
            "max_repeat_noise": max_noise, "rmse_x_noise": ratio}


def format_against_noise(name: str, m: dict | None, noise: dict | None, verdict: dict | None = None) -> str:
    """One line: the validation figures against the profiler's noise, e.g. "validation RMSE 0.0210 ms = 1.3x the
    repeat noise (RMSE 0.0160 ms, median difference 1.2% over 20 repeats); 93.0% within +-5%, 99.0% within +-10%"."""
    if not m or not m.get("n"):
        head = f"{name}: no validation samples"
    else:
        head = f"{name} RMSE {m['rmse_ms']:.4f} ms"
        if noise and noise.get("repeat_rmse_ms"):
            head += (f" = {m['rmse_ms'] / noise['repeat_rmse_ms']:.1f}x the repeat noise (RMSE "
                     f"{noise['repeat_rmse_ms']:.4f} ms, median difference {100 * noise['repeat_rel_diff_median']:.1f}% "
                     f"over {noise['repeats']} repeats)")
        else:
            head += " (no repeat noise measured: samples of an older profiler, or --repeat-every 0)"
        head += f"; {100 * m['within_5pct']:.1f}% within +-5%, {100 * m['within_10pct']:.1f}% within +-10%"
    if noise and noise.get("references"):
        lo, hi = noise["reference_drift"]
        head += f"; reference drift {100 * lo:+.1f}% to {100 * hi:+.1f}%"
    if noise and noise.get("noisy_samples"):
        head += f"; {noise['noisy_samples']} samples from windows that stayed noisy"
    if verdict is not None:
        head += ("; TOO POOR TO SOLVE ON: " + "; ".join(verdict["reasons"])) if verdict["poor"] else "; verdict: ok"
    return head


GROUP_NAMES = {"random": "random configurations", "ladder": "uniform networks of the width levels",
               "answers": "solver's answers"}


def same_network_pairs(a: list[dict], b: list[dict], statistic: str, drift: bool, level) -> dict:
    """{widths: (timing in a, timing in b)} of the configurations timed in both (medians where one was timed more
    than once), both at the reference ``level``: the A/A floor of exactly those networks."""
    def by(samples):
        out: dict = {}
        for d, v in zip(samples, measured(samples, statistic, drift, level) if samples else []):
            out.setdefault(tuple(d["widths"]), []).append(float(v))
        return {k: float(np.median(v)) for k, v in out.items()}
    ya, yb = by(a), by(b)
    return {k: (ya[k], yb[k]) for k in ya.keys() & yb.keys()}


def aa_rmse(pairs: dict, keys=None) -> float | None:
    """RMSE between the two timings of each pair (``same_network_pairs``; only ``keys`` if given): the noise floor
    a table's RMSE is compared with. None without pairs."""
    vals = [pairs[k] for k in (pairs if keys is None else keys) if k in pairs]
    return float(np.sqrt(np.mean([(x - y) ** 2 for x, y in vals]))) if vals else None


def format_group(group: str, m: dict, aa: float | None, aa_what: str) -> str:
    """One line per validation group: RMSE against the A/A RMSE of the same networks, share within +-5%, worst."""
    line = f"  {GROUP_NAMES[group]} ({m['n']}): RMSE {m['rmse_ms']:.4f} ms"
    line += (f" = {m['rmse_ms'] / aa:.1f}x the A/A of {aa_what} ({aa:.4f} ms)" if aa else
             " (no A/A of these networks)")
    return line + (f"; {100 * m['within_5pct']:.1f}% within +-5%, {100 * m['within_10pct']:.1f}% within +-10%, "
                   f"worst {100 * m['worst_err']:+.1f}%")


def poor_table(path) -> str | None:
    """Why the table at ``path`` is too poor to solve on (its fit's verdict), or None (good, or no verdict:
    a table fitted by an older tfwidth or by refine)."""
    v = (read_json(path, "latency table").get("fit") or {}).get("verdict") or {}
    return "; ".join(v.get("reasons") or ["poor fit"]) if v.get("poor") else None


# ---- a fleet of devices ----------------------------------------------------------------------------------------
# A device whose timings sit further than this from the median device's is named by the fit: over twice the A/A of
# the same networks timed twice on one quiet device (median 0.3-0.9%, docs/benchmarks.md), and a device's offset is a
# median over its whole shard, so identical quiet devices sit well within it. (This machine's two cores, shared with
# other jobs, read 3-4% apart: docs/fleet.md.)
FLEET_NAMED = 0.02


def device_offsets(table: LatencyTable, samples: list[dict]) -> list[dict]:
    """How fast each device that timed ``samples`` ran (device_profiler.samples.device_key: the hostname and the
    cores), when there are several (a fleet profiling one plan with --shard i/n; [] for one device). Per device,
    sorted by name: {"device": its name, "description", "samples": count, "offset": the median of its timings (as
    measured, not drift-corrected) over the table's predictions, relative to the median device's (0.05: it runs 5%
    slower), "reference_offset": the same from the plan's reference network, which every device times (the median
    of its samples' ref_ms over the median device's; None without reference timings), "corrected": how the fit
    divided its speed out: "reference" (drift correction on and a reference timing on each of its samples), else
    None here ("joint" once fit_fleet has fitted it with the table)}.

    The shards of a plan time disjoint configurations, so the reference is the one network every device times; with
    it the drift correction already brings each sample to the fleet's median reference speed (the table is fitted at
    that level), and the residuals say whether anything is left."""
    from device_profiler import samples as dsamples
    keys = [dsamples.device_key(d) for d in samples]
    if len(set(keys)) < 2:
        return []
    labels = dsamples.device_labels(keys)
    ratio = measured(samples, table.statistic, drift=False) / table.predict_indices(_indices(table.space, samples))
    per: dict = {}
    for k, r, d in zip(keys, ratio, samples):
        per.setdefault(k, []).append((float(r), d))
    speed = {k: float(np.median([r for r, _ in v])) for k, v in per.items()}
    refs = {}
    for k, v in per.items():
        rs = [float(d["ref_ms"]) for _, d in v if d.get("ref_ms") is not None]
        if rs:
            refs[k] = float(np.median(rs))
    mid = float(np.median(list(speed.values())))
    ref_mid = float(np.median(list(refs.values()))) if refs else None
    return [{"device": labels[k], "description": dsamples.device_description(per[k][0][1]), "samples": len(per[k]),
             "offset": speed[k] / mid - 1.0,
             "reference_offset": refs[k] / ref_mid - 1.0 if k in refs else None,
             "corrected": ("reference" if table.drift and all(d.get("ref_ms") is not None for _, d in per[k])
                           else None)}
            for k in sorted(per, key=lambda k: labels[k])]


def format_offsets(devices: list[dict], named: float = FLEET_NAMED) -> list[str]:
    """``device_offsets`` as lines: every device's offset from the median device, then one line per device more than
    ``named`` off it, saying whether the fit divided its speed out."""
    if not devices:
        return []
    lines = [f"{len(devices)} devices against the median device (their timings over the table; their reference "
             f"timings): " + ", ".join(
                 f"{d['device']} {100 * d['offset']:+.1f}%" + (f" ({100 * d['reference_offset']:+.1f}%)" if
                                                                d["reference_offset"] is not None else "")
                 + f" on {d['samples']} samples" for d in devices)
             + ("; the drift correction divided each one's speed out" if all(d["corrected"] == "reference"
                                                                             for d in devices) else
                "; each one's speed fitted with the table" if all(d["corrected"] for d in devices) else "")]
    for d in devices:
        o = d["offset"]
        if abs(o) <= named:
            continue
        line = f"device {d['device']} runs {100 * abs(o):.1f}% {'slower' if o > 0 else 'faster'} than the median device"
        if d["reference_offset"] is not None:
            line += f" (its reference timings: {100 * d['reference_offset']:+.1f}%)"
        why = ("its samples carry no reference timings" if d["reference_offset"] is None else
               "the fit used the raw timings (--drift off, or auto on these samples' repeats)")
        line += {"reference": "; its reference timings brought its samples to the fleet's speed in this fit",
                 "joint": f"; {why}, so its speed was fitted with the table (its timings divided by {1 + o:.3f})"}.get(
            d["corrected"], f"; {why}, so its speed is in the table: re-profile it with reference timings or leave "
                            f"its samples out")
        lines.append(line)
    return lines


# The joint fit of devices' speeds and the table stops when no device's speed moves by more than this, or after
# FLEET_ROUNDS refits (the table absorbs ~1/6 of a device's offset per round in tests/test_latency.py's fleet).
FLEET_TOL = 1e-3
FLEET_ROUNDS = 8


def fit_fleet(samples: list[dict], space: SearchSpace, table: LatencyTable, report: dict, **fit_kw):
    """Fit each device's speed jointly with the table, for the devices whose speed the drift correction did not
    divide out (device_offsets' "corrected" None: no reference timings, or a fit without drift correction). The table of a fleet averages its devices'
    speeds over the entries each touched; so, in turn: each such device's speed from the table's residuals
    (device_offsets), then the table refitted on timings divided by it (fit_table's ``speed``, the settings
    ``table`` was fitted with), until no speed moves by FLEET_TOL. ``fit_kw``: fit_table's other arguments as
    ``table`` was fitted with. Returns (table, report, devices), each device's "corrected" "joint" or "reference";
    the first table and report unchanged when every device was corrected by its references."""
    from device_profiler import samples as dsamples
    devices = device_offsets(table, samples)
    if all(d["corrected"] for d in devices):
        return table, report, devices
    keys = [dsamples.device_key(d) for d in samples]
    labels = dsamples.device_labels(keys)
    joint = {d["device"] for d in devices if not d["corrected"]}
    fixed = dict(reg=None, grid=(report["reg"],), prior=report["prior"], scale=report["scale"],
                 shared=report["shared"])
    first, seconds = report, report["seconds"]
    for _ in range(FLEET_ROUNDS):
        factor = {d["device"]: 1.0 + d["offset"] for d in devices if d["device"] in joint}
        table, report = fit_table(samples, space, speed=[factor.get(labels[k], 1.0) for k in keys], **fixed, **fit_kw)
        new = device_offsets(table, samples)
        moved = max(abs(a["offset"] - b["offset"]) for a, b in zip(devices, new))
        devices = new
        seconds += report["seconds"]
        if moved <= FLEET_TOL:
            break
    # the report and table keep the settings scored when they were chosen, and the time of every fit
    report = dict(report, choices=first["choices"], seconds=seconds)
    table.fit["choices"] = first["choices"]
    for d in devices:
        if d["device"] in joint:
            d["corrected"] = "joint"
    return table, report, devices


# ---- CLI -----------------------------------------------------------------------------------------------------------
def format_metrics(name: str, m: dict | None) -> str:
    """``evaluate``'s figures ``m`` as one line headed ``name``."""
    if not m or not m.get("n"):
        return f"{name}: no samples"
    return (f"{name}: {m['n']} samples  RMSE {m['rmse_ms']:.4f} ms  NRMSE {100 * m['nrmse']:.2f}%  "
            f"rel. err mean {100 * m['mean_rel_err']:.2f}% max {100 * m['max_rel_err']:.2f}%  "
            f"within 5% {100 * m['within_5pct']:.1f}%  within 10% {100 * m['within_10pct']:.1f}%")


def fit_series(table: LatencyTable, named_samples) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, measured, predicted) per (name, samples) of ``named_samples``: each sample's latency as the table's fit
    reads it (its statistic, divided by the drift of the reference) and the table's prediction of it."""
    level = table.fit.get("ref_ms")
    return [(name, measured(rows, table.statistic, table.drift, level),
             table.predict_indices(_indices(table.space, rows))) for name, rows in named_samples if rows]


def fit_png(series: list[tuple[str, np.ndarray, np.ndarray]]) -> bytes:
    """A predicted-vs-measured scatter plot as PNG bytes, one colour per (name, measured, predicted)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lo = min(float(min(y.min(), p.min())) for _, y, p in series if len(y))
    hi = max(float(max(y.max(), p.max())) for _, y, p in series if len(y))
    for name, y, p in series:
        if len(y):
            ax.scatter(y, p, s=6, alpha=0.5, label=name)
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=0.8, label="predicted = measured")
    ax.plot(xs, 1.05 * xs, "k:", lw=0.6, label="+-5%")
    ax.plot(xs, 0.95 * xs, "k:", lw=0.6)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.tick_params(axis="x", labelrotation=30)  # millisecond ticks of tiny networks run into each other flat
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def plot_fit(path, series: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Write fit_png's plot of ``series`` to ``path`` (PNG)."""
    atomic_write_bytes(path, fit_png(series))


def _print_unconstrained(table: LatencyTable, limit: int = 20) -> None:
    u = table.unconstrained
    if not u:
        print("every table entry is constrained by at least one sample")
        return
    print(f"{len(u)} table entries no sample constrained (their values are interpolated from neighbours):")
    for e in u[:limit]:
        print(f"  {e['term']} {'x'.join(map(str, e['widths']))}")
    if len(u) > limit:
        print(f"  ... and {len(u) - limit} more (all listed in the table's 'unconstrained')")


@dataclasses.dataclass
class Fitted:
    """What ``fit_samples`` did: the table (saved at ``output``; its ``fit`` holds the figures below), the fit's
    report (fit_table: settings chosen, train and validation figures, per validation group), the profiler's noise
    in the timings, the verdict on them (judge), the statistic fitted, per validation group its figures beside the
    A/A RMSE of the same networks (group, metrics, A/A RMSE or None, what that A/A is), the plot written, if
    any, and each device's speed against the median device's when several timed the samples (device_offsets)."""
    table: LatencyTable
    report: dict
    noise: dict
    verdict: dict
    statistic: str
    groups: list
    output: Path
    plot: Path | None = None
    devices: list = dataclasses.field(default_factory=list)


def fit_samples(samples, output, *, space=None, validation=None, holdout: float = 0.1, reg: float | None = None,
                prior: float | None = None, scale: str | None = None, prior_table=None, statistic: str = "min",
                drift: bool | None = None, seed: int = 0, plot=None, allow_mixed: bool = False,
                min_within_10pct: float = MIN_WITHIN_10PCT, max_repeat_noise: float = MAX_REPEAT_NOISE) -> Fitted:
    """The fit stage: the table fitted (fit_table) from the samples.jsonl at ``samples`` for the space of ``space``
    (a space.json or plan.json; default find_space's), its settings chosen on the ``validation`` samples file or a
    ``holdout`` share of the samples unless given (``reg``, ``prior``, ``scale``), pulled towards another device's
    table at ``prior_table`` if given; judged against the profiler's noise (the verdict "too poor to solve on" at
    ``min_within_10pct`` / ``max_repeat_noise``, which the pipeline stops on). ``drift``: divide each timing by its
    latest reference timing (True), not (False), or as the samples' own repeats say agrees better (None, file_drift;
    the table's fit["drift_choice"] keeps the figures). ``allow_mixed``: accept samples of several spaces, runtimes,
    formats, thread counts or kinds of device (check_uniform). Samples of several devices of one kind (a fleet) are
    fitted together and each device's speed is reported (device_offsets, fit_fleet; also in the table's
    fit["devices"]). Writes the table to ``output`` (and a predicted-vs-measured
    plot to ``plot``). Returns it with its figures (Fitted)."""
    if not 0 <= holdout < 1:
        raise UsageError(f"--holdout must be in [0, 1), got {holdout}")
    rows = load_samples(samples, allow_mixed)
    space = find_space(samples, rows, space)
    if not allow_mixed:
        check_space(rows[0] if rows else {"space_hash": space.space_hash}, space, f"samples {samples}")
    val = load_samples(validation, allow_mixed) if validation else None
    if val and rows and not allow_mixed:
        check_uniform(rows[:1] + val)
    statistic = usable_statistic(statistic, rows + (val or []))
    other = None
    if prior_table:
        other = LatencyTable.load(prior_table)
        if tuple(other.space.num_choices) != tuple(space.num_choices):
            raise UsageError(f"--prior-table {prior_table} is a table of a space with {other.space.num_choices}"
                             f" choices per layer, the samples' space has {space.num_choices}; give a table of "
                             f"the same network (any resolution, format or kernels)")
    choice = file_drift([samples], statistic) if drift is None else {"drift": bool(drift), "decided": False}
    drift = choice["drift"]
    table, rep = fit_table(rows, space, reg=reg, prior=prior, holdout=holdout, seed=seed, statistic=statistic,
                           drift=drift, validation=val, scale=scale, prior_table=other)
    # several devices (a fleet's shards): each one's speed against the median device's, fitted with the table where
    # no reference timings divided it out
    table, rep, devices = fit_fleet(rows, space, table, rep, holdout=holdout, seed=seed, statistic=statistic,
                                    drift=drift, validation=val, prior_table=other)
    noise = file_noise([samples] + ([validation] if validation else []), statistic, drift)
    verdict = judge(rep["validation"], noise, min_within_10pct, max_repeat_noise, rep["validation_groups"])
    table.fit.update(noise=noise, verdict=verdict, drift_choice=choice)
    if devices:
        table.fit["devices"] = devices
    if prior_table:
        table.fit["prior_table"]["path"] = str(prior_table)
    table.save(output)
    groups = []
    if rep["validation_groups"]:
        pairs = same_network_pairs(rows, val, statistic, drift, table.fit.get("ref_ms")) if val else {}
        vmask = groups_of(space, val) if val else None
        for g, m in rep["validation_groups"].items():
            keys = [tuple(d["widths"]) for d, k in zip(val, vmask[g]) if k] if val else []
            aa = aa_rmse(pairs, keys) if keys and any(k in pairs for k in keys) else None
            what = "the same networks (timed in both files)"
            if aa is None and noise.get("repeat_rmse_ms"):
                aa, what = noise["repeat_rmse_ms"], "the profiler's repeats"
            groups.append((g, m, aa, what))
    if plot:
        plot_fit(plot, fit_series(table, [("train", rows), ("validation", val)]))
    return Fitted(table, rep, noise, verdict, statistic, groups, Path(output), Path(plot) if plot else None, devices)


@dataclasses.dataclass
class Validated:
    """What ``validate_table`` found: the table, its figures on the samples (evaluate) and per group, the noise they
    are judged against (the samples' repeats, else the table's own samples'), the verdict, and the plot written."""
    table: LatencyTable
    metrics: dict
    groups: dict
    noise: dict
    verdict: dict
    plot: Path | None = None


def validate_table(table, samples, *, allow_mixed: bool = False, plot=None) -> Validated:
    """The validate stage: how well the table at ``table`` predicts the samples.jsonl at ``samples`` (refused when
    they were timed with another space, runtime, format or thread count unless ``allow_mixed``), judged against the
    noise as the fit judges (the table's own thresholds); writes a predicted-vs-measured plot to ``plot`` if
    given."""
    t = LatencyTable.load(table)
    rows = load_samples(samples, allow_mixed)
    if not allow_mixed and rows:
        check_space(rows[0], t.space, f"samples {samples}")
        for key, mine in (("runtime", t.runtime), ("format", t.format), ("threads", t.threads)):
            theirs = rows[0].get(key)
            if mine is not None and theirs is not None and theirs != mine:
                raise UsageError(f"samples were timed with {key} {theirs} but the table was fitted for {mine}; "
                                 f"use samples of the same setting or pass --allow-mixed")
    m = evaluate(t, rows)
    noise = file_noise([samples], t.statistic, t.drift)
    if not noise.get("repeats"):
        noise = t.fit.get("noise") or noise  # the noise the table's own samples were timed with
    v = t.fit.get("verdict") or {}
    groups = evaluate_groups(t, rows)
    verdict = judge(m, noise, v.get("min_within_10pct", MIN_WITHIN_10PCT), v.get("max_repeat_noise", MAX_REPEAT_NOISE),
                    groups)
    if plot:
        plot_fit(plot, fit_series(t, [(Path(samples).name, rows)]))
    return Validated(t, m, groups, noise, verdict, Path(plot) if plot else None)


def main(argv=None) -> int:
    if (sys.argv[1:] if argv is None else list(argv))[:1] == ["refine"]:
        raise UsageError("the refinement is its own command now: python -m tfwidth.refine (the same options)")
    p = ArgumentParser(prog="python -m tfwidth.latency", description=(
        "Fit the per-layer latency table from whole-network timings (samples.jsonl from device_profiler), or check "
        "a table against any samples file."))
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit table.json from samples.jsonl",
                       description="Non-negative least squares with a monotonicity regulariser (a wider layer is not "
                                   "faster) whose weight is chosen on validation samples.")
    f.add_argument("samples", help="samples.jsonl written by device_profiler")
    f.add_argument("-o", "--output", required=True, type=output_file, help="where to write the table (table.json)")
    f.add_argument("--space", help="space.json or plan.json of the samples (default: plan.json beside the samples, "
                                   "else a preset with the samples' space_hash)")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--validation", help="separate samples.jsonl to choose the regulariser on and report")
    g.add_argument("--holdout", type=number(0, 1, hi_open=True), default=0.1, help="share of samples held out to choose the regulariser "
                                                               "when there is no --validation file (default 0.1)")
    f.add_argument("--reg", type=number(0, 1e12), help="fix the regulariser weight instead of choosing it")
    f.add_argument("--prior", type=number(0, 1e12), help="fix the weight of the pull towards each layer's bilinear model "
                                                "(0: off) instead of choosing it")
    f.add_argument("--scale", choices=SCALES, help="weight residuals relative to each sample's latency or in ms "
                                                   "(default: chosen on the validation data)")
    f.add_argument("--prior-table", metavar="TABLE",
                   help="another device's table.json of the same network (another format, kernels, resolution or "
                        "device): the new table is pulled towards a scale and an offset per term of it, so a few "
                        "dozen samples of this device stand for a full plan")
    f.add_argument("--statistic", default="min", choices=STATISTICS, help="timing statistic to fit (default min)")
    f.add_argument("--drift", choices=("auto", "on", "off"), default="auto",
                   help="rescale each sample by its latest reference timing: on, off, or auto (default): where the "
                        "samples' own repeats agree better so")
    f.add_argument("--no-drift", action="store_true", help="the same as --drift off")
    f.add_argument("--seed", type=count(0), default=0, help="holdout split seed")
    f.add_argument("--plot", type=output_file, help="write a predicted-vs-measured plot here (PNG)")
    f.add_argument("--allow-mixed", action="store_true",
                   help="accept samples of several spaces, runtimes (or versions), formats, thread counts, kernels or "
                        "kinds of device in one fit (samples of several identical devices need no flag: the fit "
                        "names any that runs off the median device)")
    f.add_argument("--min-within-10pct", type=number(0, 1), default=MIN_WITHIN_10PCT, metavar="F",
                   help="verdict 'too poor to solve on' when fewer than this share of validation configurations "
                        "are predicted within +-10%% (default 0.75); stored in table.json's fit.verdict, which "
                        "tfwidth.pipeline stops on")
    f.add_argument("--max-repeat-noise", type=number(0, 10), default=MAX_REPEAT_NOISE, metavar="F",
                   help="... or when the profiler's repeated configurations differ by more than this (median "
                        "relative difference; default 0.05)")
    v = sub.add_parser("validate", help="report how well table.json predicts a samples file")
    v.add_argument("table")
    v.add_argument("samples")
    v.add_argument("--plot", type=output_file, help="write a predicted-vs-measured plot here (PNG)")
    v.add_argument("--allow-mixed", action="store_true", help="accept samples of several runtimes/formats")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    if a.cmd == "fit":
        r = fit_samples(a.samples, a.output, space=a.space, validation=a.validation, holdout=a.holdout, reg=a.reg,
                        prior=a.prior, scale=a.scale, prior_table=a.prior_table, statistic=a.statistic,
                        drift=False if a.no_drift else {"auto": None, "on": True, "off": False}[a.drift], seed=a.seed, plot=a.plot, allow_mixed=a.allow_mixed,
                        min_within_10pct=a.min_within_10pct, max_repeat_noise=a.max_repeat_noise)
        rep = r.report
        print(f"fitted {rep['n_unknowns']} entries from {rep['n_samples']} samples in {rep['seconds']:.1f} s"
              + (f" pulled towards {a.prior_table} (scale and offset per term)" if a.prior_table else "")
              + f"; {rep['scale']} residuals, hinge weight {rep['reg']:g}, prior weight {rep['prior']:g}"
              + (", identical blocks sharing one table in the prior" if rep["shared"] else "")
              + (f" (chosen on {rep['validation_source']} among {len(rep['choices'])} settings by relative error "
                 f"per group)" if rep["choices"] else ""))
        print(drift_line(r.table.fit.get("drift_choice") or {}))
        print(format_metrics("train", rep["train"]))
        print(format_metrics("validation", rep["validation"]))
        print(f"statistic {r.statistic}; " + format_against_noise("validation", rep["validation"], r.noise,
                                                                  r.verdict))
        for g, m, aa, what in r.groups:
            print(format_group(g, m, aa, what))
        for line in format_offsets(r.devices):
            print(line)
        _print_unconstrained(r.table)
        print(console.wrote([a.output] + ([a.plot] if r.plot else []), time.perf_counter() - t0))
    else:
        r = validate_table(a.table, a.samples, allow_mixed=a.allow_mixed, plot=a.plot)
        print(format_metrics(Path(a.samples).name, r.metrics))
        print(f"statistic {r.table.statistic}; " + format_against_noise(Path(a.samples).name, r.metrics, r.noise,
                                                                        r.verdict))
        for g, gm in r.groups.items():
            print(format_group(g, gm, r.noise.get("repeat_rmse_ms"), "the profiler's repeats"))
        _print_unconstrained(r.table)
        if r.plot:
            print(console.wrote([a.plot], time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
