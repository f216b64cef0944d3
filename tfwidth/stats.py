"""Per layer and width: how much loss a width costs versus the full network (the solver's unary terms). numpy only.

Each training sample's loss increase over the max network is attributed to the layers it was sampled for
(one-layer sampling: the one changed layer; all-layers sampling: every layer, as the paper averages them), split
evenly between them (the paper's delta / len(path)), so that the sum of the per-layer costs over a configuration
estimates that configuration's loss increase under either sampling and the AOWS temperatures mean the same thing.
Three views are kept: the running mean since the start, the last complete epoch (the paper's window), and the
epoch in progress.

With all-layers sampling that split is a poor estimator: a batch's loss increase comes from all 14 layers at once,
so every (layer, width) mean is dominated by the other 13 layers' random widths and the costs come out nearly flat
(measured: docs/benchmarks.md, "The solver's costs"). So the normal equations of the additive
model ``delta ~ sum_l cost[l, width_l]`` are kept too (X^T X of the one-hot configurations and X^T delta, per view),
and ``costs(estimator="regression")`` solves them: each layer's effect is estimated with the others held fixed.
The regression pins the max width's cost to 0 (costs are relative to the widest choice) and asks costs to be
non-increasing in width (a wider layer never costs more loss in expectation), which is what keeps ~1,000
configurations enough for 182 unknowns.

The training-time statistics mix two things: the configuration, and the weights of the step that drew it, which
keep changing (the loss increase grows late in training) while the sampling also changes under AOWS, so two seeds'
regression costs hardly agree. So a fourth view, ``probe``, holds measurements of the *trained* supernet
(tfwidth/probe.py): random configurations, all on the same fixed images, each minus the max network on them. With
weights and images fixed, what is left is the configuration: the seeds' costs agree far better and predict fresh
configurations' loss increase better than the training view's (measured: docs/benchmarks.md, "The solver's costs").
``costs(view="auto")`` uses the probe when there is one.

The probe keeps its raw measurements (configurations and loss increases), so it can also fit a model the normal
equations above cannot hold: ``estimator="pairwise"`` adds, for every edge (i, j) of the architecture's graph of
width variables (adjacent layers in MobileNetV1's chain), a cost ``beta_ij * (log(c_j / c_i) - log(M_j / M_i))^2``
(M: the max widths) for departing from the base network's shape, beta_ij >= 0. The additive model rates every layer
alone, and the solver, which picks what the model rates best, found jagged configurations (768 channels beside 104)
that the model rated far above what they measured (tools/bench_probe.py). The MRF takes such pairwise terms as they
are (the latency table has them already); the result is a GraphCost of loss increases instead of a list of per-layer
arrays.

Intercept: both fits have a free constant, ``delta ~ b0 + sum_l cost[l, c_l]``, rather than the max network's own
increase pinned at 0. The max network is no ordinary configuration: the sandwich rule trains it at every step and it
is the distillation teacher, so it is better than adding up its layers predicts. Pinned, the fit had to load that
gap onto the widest choices, which made a layer's max width look far better than its second and the solver pick 768
channels beside 104; free, the constant takes most of the gap and the cross-validated fit improves (measured:
docs/benchmarks.md, "The fit's constant"). The constant itself is dropped: a constant moves no argmin, so Viterbi,
greedy and the AOWS marginals are unaffected by it; predictions of an absolute loss increase add the mean residual
on the probe.

With the constant free, the probes rate the widths above ~0.75x as worth nothing to the supernet (their increments
fit at 0), so the 0.75x and 1.0x answers came out alike and left part of the 1.0x budget unused. A network that
will be fine-tuned or trained again does gain from width the supernet cannot show, so every width step down costs at
least ``MIN_STEP`` (1e-3) times the mean loss increase: far below the fit's resolution, it only breaks the ties
towards the wider width, and the solver spends the budget (measured: docs/benchmarks.md, "The fit's constant").
"""
from __future__ import annotations

import numpy as np

from tfwidth.artifacts import check_space, read_json, write_json
from tfwidth.errors import UsageError
from tfwidth.space import GraphCost, SearchSpace

ESTIMATORS = ("auto", "regression", "mean", "pairwise")
# the least cost of one width step down, relative to the data's mean loss increase: a tie-break towards the wider
# width where the data see no difference (module docstring, "Intercept")
MIN_STEP = 1e-3
VIEWS = ("running", "window", "current", "probe")


def regression_costs(space: SearchSpace, xtx: np.ndarray, xty: np.ndarray, ridge: float = 1e-3,
                     monotone: bool = True, intercept: bool = True, min_step: float = MIN_STEP) -> list:
    """Per layer, costs over its choices from the normal equations of ``delta ~ b0 + sum_l cost[l, c_l]``.

    ``xtx`` [D, D] and ``xty`` [D] are over the padded one-hot columns l * Kmax + j. The max choice of every layer is
    pinned to 0; with ``monotone`` the costs are cumulative sums of non-negative increments (solved exactly by NNLS),
    otherwise plain ridge. ``ridge`` is relative to the mean diagonal so it means the same for any sample count;
    it also makes never-sampled widths take their wider neighbour's cost instead of being undefined.
    ``intercept``: fit a free constant ``b0`` (not returned: no solver decision depends on it) instead of forcing
    the max network's predicted increase to 0; see "Intercept" in the module docstring. ``min_step`` (monotone
    only): every increment is at least this times the data's mean |loss increase| (``MIN_STEP``)."""
    from scipy.linalg import cho_factor, cho_solve, solve_triangular
    from scipy.optimize import nnls

    K = max(space.num_choices)
    cols, blocks = [], []
    for l, k in enumerate(space.num_choices):
        cols += [l * K + j for j in range(k - 1)]
        blocks.append(np.triu(np.ones((k - 1, k - 1))) if monotone else np.eye(k - 1))
    if not cols:
        return [np.zeros(k) for k in space.num_choices]
    xtx, xty = np.asarray(xtx, np.float64), np.asarray(xty, np.float64)
    A = xtx[np.ix_(cols, cols)]
    b = xty[cols]
    # Every row holds one width per layer, so layer 0's one-hot columns add up to the column of ones: the count n,
    # X^T 1 and the mean loss increase are all in the normal equations already.
    first = list(range(space.num_choices[0]))
    n = float(xtx[np.ix_(first, first)].sum())
    mean_delta = float(xty[first].sum()) / n if n > 0 else 0.0
    if intercept and n > 0:  # a free b0, eliminated by centring
        sx = xtx[np.ix_(first, cols)].sum(axis=0)
        A = A - np.outer(sx, sx) / n
        b = b - sx * mean_delta
    # cost[l, j] = sum_{m >= j} s[l, m]: upper-triangular ones per layer map increments to costs
    M = _block_diag(blocks)
    H = M.T @ A @ M
    g = M.T @ b
    lam = ridge * max(float(np.mean(np.diag(H))), 1e-12)
    H = H + lam * np.eye(len(cols))
    if monotone:
        R = cho_factor(H, lower=False)[0]
        R = np.triu(R)
        r = solve_triangular(R, g, trans="T")
        # increments >= floor: with s = floor + s', s' >= 0 is plain NNLS
        floor = np.full(len(cols), min_step * abs(mean_delta))
        x = floor + nnls(R, r - R @ floor, maxiter=50 * len(cols))[0]
    else:
        x = cho_solve(cho_factor(H), g)
    flat = M @ x
    out, i = [], 0
    for k in space.num_choices:
        out.append(np.append(flat[i:i + k - 1], 0.0))
        i += k - 1
    return out


def shape_features(space: SearchSpace, choices) -> np.ndarray:
    """[N, edges]: per edge (i, j) of the space, the squared departure of log(c_j / c_i) from the max network's."""
    logw = [np.log(np.asarray(c, np.float64)) for c in space.choices]
    ch = np.asarray(choices, np.int64)
    base = np.log(np.asarray(space.max_widths, np.float64))
    out = np.empty((len(ch), len(space.edges)))
    for e, (i, j) in enumerate(space.edges):
        out[:, e] = (logw[j][ch[:, j]] - logw[i][ch[:, i]] - (base[j] - base[i])) ** 2
    return out


def pairwise_costs(space: SearchSpace, choices, delta, ridge: float = 1e-3, intercept: bool = True,
                   min_step: float = MIN_STEP):
    """GraphCost of loss increases fitted to raw (configuration, loss increase) pairs: per-layer costs as in
    ``regression_costs`` (max width 0, non-increasing in width) plus per edge ``beta_ij >= 0`` times
    ``shape_features``. Solved as one bounded least squares (scipy's lsq_linear) on the increments and betas;
    ``intercept`` and ``min_step`` as in ``regression_costs``."""
    from scipy.optimize import lsq_linear
    ch = np.asarray(choices, np.int64)
    y = np.asarray(delta, np.float64)
    # cost[l, j] = sum_{m >= j} s[l, m]  <=>  s[l, m] enters every configuration with c_l <= m
    cols = [(ch[:, l] <= m).astype(np.float64) for l, k in enumerate(space.num_choices) for m in range(k - 1)]
    X = np.column_stack(cols + [shape_features(space, ch)])
    d = X.shape[1]
    lam = ridge * max(float(np.mean(np.sum((X - X.mean(axis=0)) ** 2, axis=0))), 1e-12)
    A = np.vstack([X, np.sqrt(lam) * np.eye(d)])
    b = np.concatenate([y, np.zeros(d)])
    lower = np.zeros(d)
    lower[:len(cols)] = min_step * abs(float(np.mean(y))) if len(y) else 0.0
    if intercept:  # the free constant (last column) as in regression_costs: neither bounded nor shrunk
        A = np.column_stack([A, np.append(np.ones(len(y)), np.zeros(d))])
        lower = np.append(lower, -np.inf)
    x = lsq_linear(A, b, bounds=(lower, np.inf), method="bvls").x
    unary, i = [], 0
    for k in space.num_choices:
        inc = x[i:i + k - 1]
        unary.append(np.append(np.cumsum(inc[::-1])[::-1], 0.0))
        i += k - 1
    logw = [np.log(np.asarray(c, np.float64)) for c in space.choices]
    base = np.log(np.asarray(space.max_widths, np.float64))
    pairwise = [x[i + e] * (logw[b][None, :] - logw[a][:, None] - (base[b] - base[a])) ** 2
                for e, (a, b) in enumerate(space.edges)]
    return GraphCost(tuple(unary), tuple(pairwise), space.edges)


def costs_json(costs):
    """Per-layer costs (a list of arrays) or a GraphCost, as JSON."""
    if hasattr(costs, "pairwise"):
        return {"unary": [u.tolist() for u in costs.unary], "pairwise": [p.tolist() for p in costs.pairwise]}
    return [c.tolist() for c in costs]


def _block_diag(blocks):
    from scipy.linalg import block_diag
    return block_diag(*blocks)


class WidthStats:
    def __init__(self, space: SearchSpace):
        self.space = space
        k = max(space.num_choices)
        shape = (space.num_layers, k)
        self.sum = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int64)
        self.window_sum = np.zeros(shape)
        self.window_count = np.zeros(shape, dtype=np.int64)
        self.cur_sum = np.zeros(shape)
        self.cur_count = np.zeros(shape, dtype=np.int64)
        self.probe_sum = np.zeros(shape)
        self.probe_count = np.zeros(shape, dtype=np.int64)
        self.probe_info: dict | None = None  # what the probe measured: configurations, images, epochs, base loss
        self.probe_choices: np.ndarray | None = None  # the probe's raw measurements (pairwise estimator)
        self.probe_delta: np.ndarray | None = None
        D = space.num_layers * k
        for view in VIEWS:  # normal equations of the additive model, see the module docstring
            setattr(self, f"{view}_xtx", np.zeros((D, D)))
            setattr(self, f"{view}_xty", np.zeros(D))
        self.epochs = 0

    def update(self, choices, delta, mask=None) -> None:
        """choices: [N, L] choice indices; delta: [N] loss increase; mask: [N, L] bool, layers to attribute to."""
        choices = np.asarray(choices, dtype=np.int64)
        delta = np.asarray(delta, dtype=np.float64)
        mask = np.ones(choices.shape, bool) if mask is None else np.asarray(mask, bool)
        n, L = choices.shape
        layer = np.broadcast_to(np.arange(L), (n, L))[mask]
        ch = choices[mask]
        share = delta / np.maximum(mask.sum(axis=1), 1)
        d = np.broadcast_to(share[:, None], (n, L))[mask]
        flat = layer * self.sum.shape[1] + ch
        size = self.sum.size
        self.cur_sum += np.bincount(flat, weights=d, minlength=size).reshape(self.sum.shape)
        self.cur_count += np.bincount(flat, minlength=size).reshape(self.sum.shape)
        # the regression sees every example's whole configuration, whatever it is attributed to
        X = np.zeros((n, self.current_xty.size))
        X[np.arange(n)[:, None], np.arange(L)[None, :] * self.sum.shape[1] + choices] = 1.0
        self.current_xtx += X.T @ X
        self.current_xty += X.T @ delta

    def add_arrays(self, s, c, xtx=None, xty=None) -> None:
        """Add accumulated [L, K] sums and counts (e.g. from TF variables), already split as `update` does, and
        optionally the normal equations' [D, D] and [D] increments."""
        self.cur_sum += np.asarray(s, np.float64)
        self.cur_count += np.asarray(c, np.int64)
        if xtx is not None:
            self.current_xtx += np.asarray(xtx, np.float64)
            self.current_xty += np.asarray(xty, np.float64)

    def end_epoch(self) -> None:
        """Roll the epoch in progress into the running totals and make it the last-epoch window (the supernet's
        ``end_stats_epoch`` does the same to its variables)."""
        self.sum += self.cur_sum
        self.count += self.cur_count
        self.window_sum, self.window_count = self.cur_sum, self.cur_count
        self.cur_sum = np.zeros_like(self.sum)
        self.cur_count = np.zeros_like(self.count)
        self.running_xtx = self.running_xtx + self.current_xtx
        self.running_xty = self.running_xty + self.current_xty
        self.window_xtx, self.window_xty = self.current_xtx, self.current_xty
        self.current_xtx = np.zeros_like(self.running_xtx)
        self.current_xty = np.zeros_like(self.running_xty)
        self.epochs += 1

    def set_probe(self, choices, delta, info: dict) -> None:
        """Replace the probe view with these measurements of the trained supernet (tfwidth/probe.py): choices
        [N, L], delta [N] (loss increase over the max network on the same images); ``info`` is recorded as is."""
        one = WidthStats(self.space)
        one.update(choices, delta)
        self.probe_sum, self.probe_count = one.cur_sum, one.cur_count
        self.probe_xtx, self.probe_xty = one.current_xtx, one.current_xty
        self.probe_info = dict(info)
        self.probe_choices = np.asarray(choices, np.int64)
        self.probe_delta = np.asarray(delta, np.float64)

    def has_probe(self) -> bool:
        return bool(self.probe_count.any())

    def resolve_view(self, view: str) -> str:
        """``auto`` -> ``probe`` when the trained supernet was probed, else ``running``."""
        if view == "auto":
            return "probe" if self.has_probe() else "running"
        if view == "probe" and not self.has_probe():
            raise UsageError("these statistics hold no probe of the trained supernet; run `python -m tfwidth.probe "
                             "--run RUN_DIR` or use --stats-view running")
        return view

    def normal_equations(self, view: str = "running") -> tuple[np.ndarray, np.ndarray]:
        if view == "running":  # the epoch in progress counts too, as in mean("running")
            return self.running_xtx + self.current_xtx, self.running_xty + self.current_xty
        return getattr(self, f"{view}_xtx"), getattr(self, f"{view}_xty")

    def has_regression(self, view: str = "running") -> bool:
        return bool(self.normal_equations(view)[0].any())

    def mean(self, view: str = "running") -> np.ndarray:
        """[L, Kmax] split-mean loss increase per (layer, width) of ``view`` (VIEWS); NaN where nothing was
        sampled."""
        s, c = {"running": (self.sum + self.cur_sum, self.count + self.cur_count),
                "window": (self.window_sum, self.window_count),
                "current": (self.cur_sum, self.cur_count),
                "probe": (self.probe_sum, self.probe_count)}[view]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def costs(self, view: str = "auto", estimator: str = "auto"):
        """Per layer, an array over its choices of the loss increase that width costs.

        ``regression`` (what ``auto`` picks when the normal equations were recorded): the additive model's
        per-layer effects, max width = 0, non-increasing in width. ``mean``: the split means; unmeasured widths are
        interpolated from their measured neighbours (constant beyond the ends) so the solver sees no NaN; an
        all-NaN layer -> zeros. An empty window falls back to the running view. ``view="auto"``: the probe of the
        trained supernet when there is one, else the running view (see the module docstring)."""
        if estimator not in ESTIMATORS:
            raise UsageError(f"unknown statistics estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
        if view not in VIEWS + ("auto",):
            raise UsageError(f"unknown statistics view {view!r}; use auto, {', '.join(VIEWS)}")
        view = self.resolve_view(view)
        if view == "window" and not self.window_count.any():
            view = "running"
        if estimator == "pairwise":
            if view != "probe" or self.probe_choices is None:
                raise UsageError("the pairwise estimator needs the probe's raw measurements (a probe by this "
                                 "tfwidth: `python -m tfwidth.probe --run RUN_DIR`); use --stats-estimator auto")
            return pairwise_costs(self.space, self.probe_choices, self.probe_delta)
        if estimator == "regression" and not self.has_regression(view):
            raise UsageError("these statistics hold no regression data (written by an older tfwidth); "
                             "use --stats-estimator mean")
        if estimator in ("auto", "regression") and self.has_regression(view):
            return regression_costs(self.space, *self.normal_equations(view))
        m = self.mean(view)
        out = []
        for l, k in enumerate(self.space.num_choices):
            row = m[l, :k]
            ok = np.isfinite(row)
            if not ok.any():
                out.append(np.zeros(k))
            elif ok.all():
                out.append(row.copy())
            else:
                x = np.arange(k)
                out.append(np.interp(x, x[ok], row[ok]))
        return out

    def unmeasured(self) -> list:
        """(layer name, width) of every choice training never sampled: its cost is interpolated, not measured."""
        c = self.count + self.cur_count
        return [(self.space.layer_names[l], self.space.choices[l][j])
                for l, k in enumerate(self.space.num_choices) for j in range(k) if c[l, j] == 0]

    # ---- serialisation ----------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        def rows(a):
            return [a[l, :k].tolist() for l, k in enumerate(self.space.num_choices)]
        mean = self.mean("running")
        valid = self._valid_columns()
        reg = {}
        for view in VIEWS:
            xtx, xty = getattr(self, f"{view}_xtx"), getattr(self, f"{view}_xty")
            # one-hot products are co-occurrence counts: integers keep the file small and exact
            reg[view] = {"xtx": np.rint(xtx[np.ix_(valid, valid)]).astype(np.int64).tolist(),
                         "xty": xty[valid].tolist()}
        return {"kind": "width_stats", "space_hash": self.space.space_hash, "space": self.space.to_json(),
                "epochs": self.epochs, "layers": list(self.space.layer_names),
                "widths": [list(c) for c in self.space.choices],
                "mean": [[None if not np.isfinite(v) else float(v) for v in r] for r in rows(mean)],
                "costs": costs_json(self.costs()),
                "sum": rows(self.sum), "count": rows(self.count),
                "window_sum": rows(self.window_sum), "window_count": rows(self.window_count),
                "cur_sum": rows(self.cur_sum), "cur_count": rows(self.cur_count),
                "probe": None if self.probe_info is None else {
                    "info": self.probe_info, "sum": rows(self.probe_sum), "count": rows(self.probe_count),
                    "choices": None if self.probe_choices is None else self.probe_choices.tolist(),
                    "delta": None if self.probe_delta is None else self.probe_delta.tolist()},
                "regression": reg}

    def _valid_columns(self) -> list:
        K = self.sum.shape[1]
        return [l * K + j for l, k in enumerate(self.space.num_choices) for j in range(k)]

    @classmethod
    def from_json(cls, d: dict, space: SearchSpace | None = None, what: str = "stats") -> "WidthStats":
        if d.get("kind", "width_stats") != "width_stats":
            raise UsageError(f"{what} is not a stats file (kind {d.get('kind')!r}); pass the stats.json of a "
                             f"python -m tfwidth.train run")
        if space is None:
            if not isinstance(d.get("space"), dict):
                raise UsageError(f"{what} embeds no space; pass the stats.json of a python -m tfwidth.train run")
            space = SearchSpace.from_dict(d["space"], f"{what}'s space")
        check_space(d, space, what)
        try:
            return cls._from_json(d, space, what)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            missing = f"lacks the key {e}" if isinstance(e, KeyError) else f"is malformed ({type(e).__name__}: {e})"
            raise UsageError(f"{what} {missing}; pass the stats.json of a python -m tfwidth.train run, or "
                             f"retrain") from None

    @classmethod
    def _from_json(cls, d: dict, space: SearchSpace, what: str) -> "WidthStats":
        st = cls(space)
        for name in ("sum", "count", "window_sum", "window_count", "cur_sum", "cur_count"):
            arr = getattr(st, name)
            for l, row in enumerate(d[name]):
                arr[l, :len(row)] = row
        st.epochs = int(d.get("epochs", 0))
        if d.get("probe"):
            st.probe_info = d["probe"]["info"]
            if d["probe"].get("choices") is not None:
                st.probe_choices = np.asarray(d["probe"]["choices"], np.int64)
                st.probe_delta = np.asarray(d["probe"]["delta"], np.float64)
            for name in ("sum", "count"):
                arr = getattr(st, f"probe_{name}")
                for l, row in enumerate(d["probe"][name]):
                    arr[l, :len(row)] = row
        valid = st._valid_columns()
        for view, r in (d.get("regression") or {}).items():
            if view not in VIEWS:
                continue
            xtx, xty = getattr(st, f"{view}_xtx"), getattr(st, f"{view}_xty")
            xtx[np.ix_(valid, valid)] = np.asarray(r["xtx"], np.float64)
            xty[valid] = np.asarray(r["xty"], np.float64)
            if not np.isfinite(xty).all():
                raise UsageError(f"{what} has NaN or infinite values in its {view} regression; the training "
                                 f"diverged")
        for name in ("sum", "window_sum", "cur_sum", "probe_sum"):
            if not np.isfinite(getattr(st, name)).all():
                raise UsageError(f"{what} has NaN or infinite values in {name}; the training diverged")
        return st

    def save(self, path) -> None:
        write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path, space: SearchSpace | None = None) -> "WidthStats":
        return cls.from_json(read_json(path, "stats"), space, f"stats {path}")


def acc_chain(space: SearchSpace, stats_costs) -> GraphCost:
    """Score: minus the loss increases (higher is better), over the space's edges. ``stats_costs``: per-layer
    arrays (no pairwise terms), or a GraphCost of loss increases with pairwise terms
    (WidthStats.costs(estimator="pairwise"))."""
    ks = space.num_choices
    if isinstance(stats_costs, GraphCost):
        c = stats_costs
        ok = len(c.unary) == space.num_layers and c.edges == space.edges and all(
            np.shape(u) == (k,) for u, k in zip(c.unary, ks)) and all(
            np.shape(p) == (ks[a], ks[b]) for p, (a, b) in zip(c.pairwise, c.edges))
        if not ok:
            raise UsageError("width statistics do not have the shape of the search space; regenerate them")
        if not all(np.isfinite(x).all() for x in c.unary + c.pairwise):
            raise UsageError("width statistics contain NaN or infinite costs; the training diverged: retrain or "
                             "use an earlier stats.json")
        return c.scale(-1.0)
    costs = [np.asarray(c, float) for c in stats_costs]
    if len(costs) != space.num_layers or any(c.shape != (k,) for c, k in zip(costs, space.num_choices)):
        raise UsageError("width statistics do not have the shape of the search space; regenerate them")
    if not all(np.isfinite(c).all() for c in costs):
        raise UsageError("width statistics contain NaN or infinite costs; the training diverged: retrain or "
                         "use an earlier stats.json")
    return GraphCost(tuple(-c for c in costs), tuple(np.zeros((ks[a], ks[b])) for a, b in space.edges), space.edges)
