"""Tree Markov random fields: choose one state per width variable to maximise a score under budgets. numpy only.

Every cost is a ``GraphCost`` (tfwidth.cost): per-variable vectors plus per-edge matrices, whose edges must form a
tree (MobileNetV1's chain (0, 1), (1, 2), ...; MobileNetV2's stage widths with their blocks' expansions hanging off);
any other graph is refused with a ValueError naming the problem. ``acc`` is the score to
maximise (the solver passes ``-costs`` of the width statistics), ``lat`` the latency to keep <= target, and
``extra`` more pairwise-separable budgets such as the parameter count, as ``[(GraphCost, limit), ...]``. Every solver
runs one traversal of the tree rooted at its last variable (``_tree``), so the chain is the special case with the
answers the chain solvers always gave.

Solvers, all returning a ``Solution``:
  ows      the paper's: Viterbi on acc - gamma * lat, searching gamma over the breakpoints of the Lagrangian dual.
           It only reaches configurations on the convex hull of the (latency, score) front.
  exact    dynamic programming over (state, discretised budget): the true constrained optimum, certified by a
           relaxation (see ``exact``).
  greedy   AutoSlim-like: shrink the layer that loses least score per unit of budget saved, from the max widths.
  uniform  the largest single width multiplier that meets the budgets (candidates given by the caller).
``marginals`` gives the per-variable distributions of the Gibbs distribution exp((acc - gamma*lat)/T) (AOWS sampling).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

from tfwidth.cost import GraphCost


@dataclasses.dataclass
class Solution:
    method: str
    indices: tuple | None  # None when nothing meets the budgets
    objective: float = float("-inf")  # acc.total(indices): the true score, never the Lagrangian
    latency: float = float("inf")
    extras: tuple = ()  # value of each extra budget's cost at indices
    gamma: float | None = None  # ows: the Lagrange multiplier of the returned path
    mus: tuple = ()  # ows: multipliers of the extra budgets
    certified: bool = True  # exact: proved optimal (False: feasible, within ``gap`` of the optimum)
    gap: float = 0.0
    evaluations: int = 0  # Viterbi or DP passes used

    @property
    def feasible(self) -> bool:
        return self.indices is not None


@dataclasses.dataclass(frozen=True)
class _Tree:
    """The traversal every solver shares. Rooted at the LAST variable: on the chain (0, 1), (1, 2), ... messages then
    run 0 -> n-1 like the chain solvers always did, so the chain goes through this code with the same additions and
    the same argmax tie-breaking. ``order`` is a post-order (children before their parent, the root last);
    ``children[v]`` lists the biggest subtree first (the exact DP steps into it like a chain and merges the rest);
    ``flip[v]``: the pairwise term of v's parent edge is indexed (parent, v), so it is transposed to (v, parent)."""
    root: int
    order: tuple
    parent: tuple  # -1 at the root
    edge: tuple  # index of the edge to the parent, -1 at the root
    flip: tuple
    children: tuple


@functools.lru_cache(maxsize=256)
def _tree(n: int, edges: tuple) -> _Tree:
    """The traversal of a tree of n variables; a ValueError naming the problem for any other graph."""
    what = f"tfwidth.mrf solves trees of width variables; this cost's edges {edges}"
    root_of = list(range(n))

    def find(v):
        while root_of[v] != v:
            root_of[v] = root_of[root_of[v]]
            v = root_of[v]
        return v
    adj = [[] for _ in range(n)]
    for e, (i, j) in enumerate(edges):
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"{what} name a variable outside 0..{n - 1}: ({i}, {j})")
        ri, rj = find(i), find(j)
        if ri == rj:
            raise ValueError(f"{what} are not a tree: edge ({i}, {j}) closes a cycle")
        root_of[ri] = rj
        adj[i].append((j, e, True))
        adj[j].append((i, e, False))
    apart = [v for v in range(n) if find(v) != find(n - 1)]
    if apart:
        raise ValueError(f"{what} are not a tree: variables {apart} are not connected to variable {n - 1}")
    root = n - 1
    parent, edge, flip = [-1] * n, [-1] * n, [False] * n
    pre, stack = [], [root]
    while stack:
        v = stack.pop()
        pre.append(v)
        for w, e, f in adj[v]:
            if w != parent[v]:
                parent[w], edge[w], flip[w] = v, e, f
                stack.append(w)
    size = [1] * n
    for v in reversed(pre):
        if parent[v] >= 0:
            size[parent[v]] += size[v]
    children = [sorted((w for w, _, _ in adj[v] if parent[w] == v), key=lambda w: (-size[w], w)) for v in range(n)]
    order = []
    stack = [(root, False)]
    while stack:  # post-order, children in their listed order
        v, done = stack.pop()
        if done:
            order.append(v)
        else:
            stack.append((v, True))
            stack.extend((w, False) for w in reversed(children[v]))
    return _Tree(root, tuple(order), tuple(parent), tuple(edge), tuple(flip), tuple(map(tuple, children)))


def _as_tree(c) -> GraphCost:
    """A GraphCost, or (unary, pairwise) of a chain, as a GraphCost; a cost whose edges are not a tree is refused."""
    if not isinstance(c, GraphCost):
        unary, pairwise = c
        c = GraphCost(tuple(np.asarray(u, float) for u in unary), tuple(np.asarray(p, float) for p in pairwise))
    _tree(len(c.unary), c.edges)
    return c


def combine(terms: Sequence[tuple[float, GraphCost]]) -> GraphCost:
    """sum_j w_j * cost_j, as one cost over the same graph."""
    n, edges = len(terms[0][1].unary), terms[0][1].edges
    if any(c.edges != edges for _, c in terms):
        raise ValueError("costs over different graphs of width variables cannot be combined")
    unary = [sum(w * c.unary[i] for w, c in terms) for i in range(n)]
    pairwise = [sum(w * c.pairwise[i] for w, c in terms) for i in range(len(edges))]
    return GraphCost(tuple(np.asarray(u, float) for u in unary), tuple(np.asarray(p, float) for p in pairwise), edges)


def _folded(c: GraphCost) -> tuple[_Tree, list, list]:
    """(tree, base, E): each variable's node term moved into the edge from its first child, so a configuration's
    total is sum over leaves of base[v][c_v] + sum over non-root v of E[v][c_v, c_parent(v)]. base[v] is None for a
    variable with children. On the chain: base[0] = unary[0] and E[i] = pairwise[i] + unary[i + 1][None, :], the
    chain solvers' folding term for term."""
    tr = _tree(len(c.unary), c.edges)
    base = [None] * len(c.unary)
    E = [None] * len(c.unary)
    for v in tr.order:
        if not tr.children[v]:
            base[v] = np.asarray(c.unary[v], float)
        if v != tr.root:
            p = np.asarray(c.pairwise[tr.edge[v]], float)
            p = p.T if tr.flip[v] else p
            parent = tr.parent[v]
            E[v] = p + np.asarray(c.unary[parent], float)[None, :] if tr.children[parent][0] == v else p
    return tr, base, E


def _upward(tr: _Tree, base, E, step):
    """The leaves-to-root pass: per variable, the best (or log-summed) score of its subtree per state; ``step(w, x, e)``
    turns child w's table x and its edge e (child, parent) into the message to the parent."""
    val = [None] * len(tr.order)
    msgs = [None] * len(tr.order)
    for v in tr.order:
        val[v] = base[v]
        for i, w in enumerate(tr.children[v]):
            msgs[w] = step(w, val[w], E[w])
            val[v] = msgs[w] if i == 0 else val[v] + msgs[w]
    return val, msgs


# ---- max-sum and sum-product ---------------------------------------------------------------------------------------
def viterbi(score) -> tuple[tuple, float]:
    """The configuration maximising score.total(idx) (ties: the lowest index at the root, the last variable, then
    the lowest index of each child given its parent's; on a chain: scanned from the end)."""
    tr, base, E = _folded(_as_tree(score))
    back = [None] * len(E)

    def step(w, x, e):
        m = x[:, None] + e
        arg = np.argmax(m, axis=0)
        back[w] = arg
        return m[arg, np.arange(m.shape[1])]
    val, _ = _upward(tr, base, E, step)
    idx = [0] * len(E)
    idx[tr.root] = int(np.argmax(val[tr.root]))
    for v in reversed(tr.order):
        for w in tr.children[v]:
            idx[w] = int(back[w][idx[v]])
    return tuple(idx), float(val[tr.root][idx[tr.root]])


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _inside_outside(tr: _Tree, base, E, reduce):
    """Both passes of belief propagation on the folded tree with ``reduce(array, axis)`` (max: max-sum; log-sum-exp:
    sum-product in log space). Returns (inside, outside, edge): inside[v][c] + outside[v][c] is the reduction over
    every configuration with v in state c; edge[w][a, b] (w not the root) the same with w in state a and its parent
    in state b, indexed as E[w]."""
    inside, msgs = _upward(tr, base, E, lambda w, x, e: reduce(x[:, None] + e, axis=0))
    outside, edge = [None] * len(E), [None] * len(E)
    outside[tr.root] = np.zeros_like(inside[tr.root])
    for v in reversed(tr.order):
        for w in tr.children[v]:
            rest = outside[v]  # everything outside w's subtree, per state of v
            for o in tr.children[v]:
                if o != w:
                    rest = rest + msgs[o]
            around = E[w] + rest[None, :]
            outside[w] = reduce(around, axis=1)
            edge[w] = inside[w][:, None] + around
    return inside, outside, edge


def marginals(acc, lat, gamma: float, T: float) -> list[np.ndarray]:
    """Per variable, P(state) under p(idx) ~ exp((acc(idx) - gamma * lat(idx)) / T), by sum-product in log space
    (leaves to root, then root to leaves; on a chain: forward-backward).

    Everything is divided by T before exponentiating and each step subtracts its maximum, so T down to ~1e-300 only
    sharpens the distribution towards the Viterbi path instead of overflowing."""
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T}")
    tr, base, E = _folded(combine([(1.0 / T, _as_tree(acc)), (-gamma / T, _as_tree(lat))]))
    inside, outside, _ = _inside_outside(tr, base, E, _logsumexp)
    out = []
    for i in range(len(E)):
        lp = inside[i] + outside[i]
        p = np.exp(lp - lp.max())
        out.append(p / p.sum())
    return out


# ---- helpers -------------------------------------------------------------------------------------------------------
def _evaluate(method, idx, acc, lat, extra, **kw) -> Solution:
    return Solution(method, tuple(int(i) for i in idx), acc.total(idx), lat.total(idx),
                    tuple(c.total(idx) for c, _ in extra), **kw)


def _fits(sol_lat, sol_extras, target, extra, tol=1e-9) -> bool:
    # A relative tolerance so a target equal to a configuration's own latency (computed in another order) admits it.
    if sol_lat > target + tol * max(1.0, abs(target)):
        return False
    return all(v <= lim + tol * max(1.0, abs(lim)) for v, (_, lim) in zip(sol_extras, extra))


def _prepare(acc, lat, extra):
    acc, lat = _as_tree(acc), _as_tree(lat)
    extra = [(_as_tree(c), float(lim)) for c, lim in (extra or [])]
    for name, c in [("acc", acc), ("lat", lat)] + [(f"extra[{j}]", c) for j, (c, _) in enumerate(extra)]:
        if not all(np.isfinite(a).all() for a in c.unary + c.pairwise):
            raise ValueError(f"{name} has NaN or infinite entries")
    return acc, lat, extra


def min_total(c) -> tuple[tuple, float]:
    """The path of least total cost (e.g. the fastest configuration) and that cost."""
    path, v = viterbi(_as_tree(c).scale(-1.0))
    return path, -v


# ---- OWS: Lagrangian relaxation ------------------------------------------------------------------------------------
def _hull_search(acc: GraphCost, lat: GraphCost, target: float, counter: list) -> tuple[tuple | None, float]:
    """Best-score path with lat <= target among Viterbi solutions of acc - gamma * lat, gamma >= 0, and its gamma.

    The dual function is piecewise linear in gamma. Between an infeasible hull point (lo) and a feasible one (hi)
    the only gamma worth trying is where their Lagrangians are equal: Viterbi there either finds a path above the
    segment (a new hull vertex, which replaces lo or hi) or proves lo and hi adjacent. This walks the hull in a few
    passes with an exact answer, where a bisection on gamma would need ~50 passes and a stopping tolerance."""
    def solve(g):
        counter[0] += 1
        p, _ = viterbi(combine([(1.0, acc), (-g, lat)]))
        return p, acc.total(p), lat.total(p)

    tol = 1e-9 * max(1.0, abs(target))
    lo = solve(0.0)
    if lo[2] <= target + tol:
        return lo[0], 0.0
    fast, fast_lat = min_total(lat)
    counter[0] += 1
    if fast_lat > target + tol:
        return None, float("nan")
    hi = (fast, acc.total(fast), fast_lat)
    gb = float("inf")
    for _ in range(10_000):  # bounded by the number of hull vertices; the cap only guards against float cycling
        gb = (lo[1] - hi[1]) / (lo[2] - hi[2])
        p, a, l = solve(gb)
        lag = a - gb * l
        if lag <= lo[1] - gb * lo[2] + 1e-12 * (1 + abs(lag)):
            break  # no path above the segment: lo and hi are adjacent hull vertices, both optimal at gb
        if l <= target + tol:
            hi = (p, a, l)
        else:
            lo = (p, a, l)
    return hi[0], gb


def ows(acc, lat, target: float, extra=None, mu_iters: int = 30) -> Solution:
    """The paper's solver. Budgets beyond latency get their own multiplier mu, found by bisection around the
    latency hull search (nested: mu_j outermost). The returned path is the best-scoring feasible path seen, so it is
    feasible whenever any tried path is; on the latency-only problem it is a vertex of the convex hull."""
    acc, lat, extra = _prepare(acc, lat, extra)
    counter = [0]

    def nested(score: GraphCost, j: int):
        if j == len(extra):
            p, g = _hull_search(score, lat, target, counter)
            return p, g, ()
        cost, limit = extra[j]
        best = [None]

        def attempt(mu):
            p, g, mus = nested(combine([(1.0, score), (-mu, cost)]), j + 1)
            if p is not None:
                sol = _evaluate("ows", p, acc, lat, extra)
                ok = _fits(sol.latency, sol.extras, target, extra)
                if ok and (best[0] is None or sol.objective > best[0][0].objective):
                    best[0] = (sol, g, (mu,) + mus)
                return p is not None and cost.total(p) <= limit + 1e-9 * max(1.0, abs(limit))
            return False

        if attempt(0.0):
            return best[0][0].indices, best[0][1], best[0][2]
        span = max(float(np.ptp(u)) for u in score.unary + score.pairwise if u.size) + 1e-12
        cspan = max(float(np.ptp(u)) for u in cost.unary + cost.pairwise if u.size) + 1e-300
        hi = span / cspan
        for _ in range(60):
            if attempt(hi):
                break
            hi *= 4.0
        else:
            return None, None, ()
        lo = 0.0
        for _ in range(mu_iters):
            mid = 0.5 * (lo + hi)
            if attempt(mid):
                hi = mid
            else:
                lo = mid
        if best[0] is None:
            return None, None, ()
        return best[0][0].indices, best[0][1], best[0][2]

    p, g, mus = nested(acc, 0)
    if p is None:
        return Solution("ows", None, evaluations=counter[0])
    return _evaluate("ows", p, acc, lat, extra, gamma=g, mus=tuple(mus), evaluations=counter[0])


# ---- exact: DP over discretised budgets ----------------------------------------------------------------------------
def _edge_step(V: np.ndarray, ae: np.ndarray, offs: list, shape: tuple):
    """A child's table V[a, t...] to its message W[b, t...] = max_a V[a, t - off[a, b]] + ae[a, b] to the parent in
    state b, and what backtracking needs: V itself for one budget (the argmax is recomputed there), else the argmax.
    One budget: the max over a as one contiguous reduction per state (argmax along the short axis was 3/4 of the
    time)."""
    ka, kb = ae.shape
    # States left out (-inf: a state with no configuration, or one exact's pruning removed) cost nothing: V is
    # non-decreasing along every budget, so its last cell says whether a state has any finite cell.
    alive = np.isfinite(V.reshape(ka, -1)[:, -1])
    pairs = [[a for a in range(ka) if alive[a] and np.isfinite(ae[a, b])] for b in range(kb)]
    if len(shape) == 1:
        n, off = shape[0], offs[0]
        cand = np.empty((ka, n))
        W = np.empty((kb, n))
        for b in range(kb):
            if not pairs[b]:
                W[b].fill(-np.inf)
                continue
            c = cand[:len(pairs[b])]
            c.fill(-np.inf)
            for i, a in enumerate(pairs[b]):
                o = int(off[a, b])
                if o < n:
                    np.add(V[a, :n - o], ae[a, b], out=c[i, o:])
            np.max(c, axis=0, out=W[b])
        return W, V
    W = np.full((kb,) + shape, -np.inf)
    # the child's state behind each cell: one byte holds any variable's choices (memory: docs/benchmarks.md,
    # "MobileNetV2 (issue 20)")
    arg = np.zeros((kb,) + shape, dtype=np.uint8 if ka <= 256 else np.int32)
    for b in range(kb):
        for a in pairs[b]:
            off = tuple(int(o[a, b]) for o in offs)
            if any(o >= n for o, n in zip(off, shape)):
                continue
            dst = (b,) + tuple(slice(o, None) for o in off)
            src = V[(a,) + tuple(slice(0, n - o) for o, n in zip(off, shape))] + ae[a, b]
            cur = W[dst]
            better = src > cur
            if better.any():
                W[dst] = np.where(better, src, cur)
                arg[dst] = np.where(better, a, arg[dst])
    return W, arg


def _edge_back(back: np.ndarray, ae: np.ndarray, offs: list, b: int, t: tuple) -> tuple[int, tuple]:
    """The child's state behind _edge_step's W[b, t] (the lowest on ties) and the budget left to its subtree."""
    if len(t) == 1:  # back is the child's table
        off = offs[0][:, b]
        vals = np.array([back[a, t[0] - off[a]] + ae[a, b] if t[0] - off[a] >= 0 else -np.inf
                         for a in range(back.shape[0])])
        a = int(np.argmax(vals))
    else:
        a = int(back[(b,) + t])
    return a, tuple(x - int(o[a, b]) for x, o in zip(t, offs))


def _breakpoints(m: np.ndarray) -> np.ndarray:
    """The budgets t where m (non-decreasing along every axis) rises: m[t] > m[t - e_d] for every axis d."""
    mask = np.isfinite(m)
    for d in range(m.ndim):
        lo, hi = [slice(None)] * m.ndim, [slice(None)] * m.ndim
        lo[d], hi[d] = slice(None, -1), slice(1, None)
        mask[tuple(hi)] &= m[tuple(hi)] > m[tuple(lo)]
    return np.argwhere(mask)


def _merge(V: np.ndarray, M: np.ndarray, shape: tuple):
    """The max-plus convolution over budgets, per parent state b, of the parent's table V (its first children) and a
    further child's message M: out[b, t] = max_{s <= t} V[b, t - s] + M[b, s]. V and M are non-decreasing in t, so
    only the points s where M[b] rises are tried (a leaf child: at most its number of states). Returns out, the
    rising points per b and the index of the one used at each cell."""
    out = np.full_like(V, -np.inf)
    points = [_breakpoints(M[b]) for b in range(V.shape[0])]
    # the index of the rising point used at each cell (cells no point reaches are never read): one byte when a
    # leaf child (at most its number of states) is merged, which is every merge on MobileNetV2's tree
    arg = np.zeros(V.shape, dtype=np.uint8 if max(len(p) for p in points) <= 256 else np.int32)
    for b in range(V.shape[0]):
        pts = points[b] if np.isfinite(V[b].reshape(-1)[-1]) else ()  # a state left out stays out
        for i, s in enumerate(pts):
            dst = (b,) + tuple(slice(int(o), None) for o in s)
            src = V[(b,) + tuple(slice(0, n - int(o)) for o, n in zip(s, shape))] + M[(b,) + tuple(s)]
            better = src > out[dst]
            out[dst] = np.where(better, src, out[dst])
            arg[dst] = np.where(better, i, arg[dst])
    return out, points, arg


def _budget_dp(acc: GraphCost, costs: list[GraphCost], bins: list[int], res: list[float], rounding,
               fallbacks: int = 0) -> list[tuple]:
    """Best configuration with sum_terms rounding(cost_term / res) <= bins for every budget, then (``fallbacks`` > 0)
    the best ones for the budgets tightened by 1, 2, ... bins in every dimension; [] when none fits.

    V_v[c, t...] = best score of v's subtree with v in state c whose rounded costs are <= t (per budget), so the
    answer is max_c V_root[c, bins]. A variable's table is its first (biggest) child's message (a chain step), then
    each further child's message merged in by a convolution over budgets. Costs are first shifted so every term is
    >= 0 (the shift is taken off the bins)."""
    tr, a_base, a_E = _folded(acc)
    n_var = len(a_E)
    int_base, int_E, B = [], [], []
    for c, b, r in zip(costs, bins, res):
        _, s, e = _folded(c)
        shift = float(sum(float(s[v].min()) for v in tr.order if s[v] is not None)) + sum(
            float(e[v].min()) for v in tr.order if e[v] is not None)
        int_base.append([None if x is None else rounding((x - x.min()) / r).astype(np.int64) for x in s])
        int_E.append([None if x is None else rounding((x - x.min()) / r).astype(np.int64) for x in e])
        # Subtract the shift in real units then discretise the remaining budget (floor: never loosen the budget).
        # Both rounding modes need sum(int) <= floor((limit - shift) / r): ceil because int >= real / r makes that
        # sufficient, floor because real <= limit implies it.
        total = int(math.floor(b - shift / r + 1e-9))
        if total < 0:
            return []
        B.append(total + 1)
    shape = tuple(B)
    offs = [[ie[v] for ie in int_E] for v in range(n_var)]
    table, back, merges = [None] * n_var, [None] * n_var, [[] for _ in range(n_var)]
    for v in tr.order:
        if not tr.children[v]:
            k = len(a_base[v])
            V = np.full((k,) + shape, -np.inf)
            for c in range(k):
                off = tuple(int(ib[v][c]) for ib in int_base)
                if all(o < n for o, n in zip(off, shape)):
                    V[(c,) + tuple(slice(o, None) for o in off)] = a_base[v][c]
        else:
            for i, w in enumerate(tr.children[v]):
                M, back[w] = _edge_step(table[w], a_E[w], offs[w], shape)
                table[w] = None
                if i == 0:
                    V = M
                else:
                    V, points, arg = _merge(V, M, shape)
                    merges[v].append((points, arg))
        table[v] = V
    final = table[tr.root]
    paths = []
    for j in range(fallbacks + 1):
        last_t = tuple(n - 1 - j for n in shape)
        if min(last_t) < 0 or not np.isfinite(final[(slice(None),) + last_t]).any():
            break
        idx = [0] * n_var
        idx[tr.root] = int(np.argmax(final[(slice(None),) + last_t]))
        todo = [(tr.root, last_t)]
        while todo:
            v, t = todo.pop()
            b, kids = idx[v], tr.children[v]
            for w, (points, arg) in zip(reversed(kids[1:]), reversed(merges[v])):
                s = tuple(int(x) for x in points[b][arg[(b,) + t]])
                idx[w], tw = _edge_back(back[w], a_E[w], offs[w], b, s)
                todo.append((w, tw))
                t = tuple(x - y for x, y in zip(t, s))
            if kids:
                idx[kids[0]], tw = _edge_back(back[kids[0]], a_E[kids[0]], offs[kids[0]], b, t)
                todo.append((kids[0], tw))
        paths.append(tuple(idx))
    return paths


def _pruned(acc: GraphCost, lat: GraphCost, target: float, extra: list, bound: Solution) -> GraphCost:
    """``acc`` with -inf on every state and edge state that no configuration scoring at least ``bound.objective``
    within the budgets passes through: Lagrangian reduced-cost fixing with ``bound``'s multipliers (OWS's). For any
    configuration within the budgets and multipliers >= 0, acc <= acc - gamma * (lat - target) - sum mu_j * (c_j -
    limit_j); the right side's max-marginals bound every configuration through a state, so a state whose bound is
    below ``bound.objective`` holds none that is better than it. The exact DP then skips those states."""
    gamma, mus = float(bound.gamma or 0.0), tuple(bound.mus)
    score = combine([(1.0, acc), (-gamma, lat)] + [(-mu, c) for mu, (c, _) in zip(mus, extra)])
    const = gamma * target + sum(mu * lim for mu, (_, lim) in zip(mus, extra))
    tr, base, E = _folded(score)
    inside, outside, edge = _inside_outside(tr, base, E, np.max)
    keep = bound.objective - const - 1e-9 * (1.0 + abs(bound.objective) + abs(const))
    unary = [np.where(inside[v] + outside[v] >= keep, u, -np.inf) for v, u in enumerate(acc.unary)]
    pairwise = list(acc.pairwise)
    for w in tr.order:
        if w != tr.root:
            ok = edge[w] >= keep
            pairwise[tr.edge[w]] = np.where(ok.T if tr.flip[w] else ok, pairwise[tr.edge[w]], -np.inf)
    return GraphCost(tuple(unary), tuple(pairwise), acc.edges)


def _restricted(costs: list, keep: list) -> list:
    """Each cost on the states ``keep[v]`` of each variable only (sorted indices into its choices)."""
    return [GraphCost(tuple(u[k] for u, k in zip(c.unary, keep)),
                      tuple(p[np.ix_(keep[i], keep[j])] for p, (i, j) in zip(c.pairwise, c.edges)), c.edges)
            for c in costs]


def exact(acc, lat, target: float, extra=None, resolution: float | None = None, extra_bins: int = 200,
          max_cells: int = 1 << 19, refine: int = 3) -> Solution:
    """The constrained optimum by dynamic programming over discretised budgets.

    Each term's cost is rounded down to the grid, so every truly feasible path is accepted: the DP optimum bounds the
    true one from above, and is it when it truly fits (certified). Otherwise the best truly feasible path among the
    DP's answers for budgets tightened by 1..n bins (n terms: enough to absorb the rounding) is a lower bound; if the
    bounds differ the grid of each overrun budget is refined (x4 per step while the DP stays under ``max_cells``
    cells per state, scaled up by the share of states the Lagrangian pruning left out) and at worst the best feasible
    path is returned with its ``gap`` to the bound. Latency resolution: min(0.01, target / 1000) unless given; each
    extra budget gets ``extra_bins`` bins (refined likewise). States that cannot beat the best feasible answer known
    (OWS's, then the DP's) are left out of the DP first (``_pruned``): the same optimum, far fewer states.
    """
    acc, lat, extra = _prepare(acc, lat, extra)
    if extra:
        # The answer under the latency budget alone bounds the answer under every budget from above; when it meets
        # the other budgets too it is that answer, and the DP over several budgets (bins multiply: ~100x the time
        # and memory on MobileNetV2) is not needed.
        alone = exact(acc, lat, target, None, resolution, extra_bins, max_cells, refine)
        if alone.feasible and _fits(alone.latency, tuple(c.total(alone.indices) for c, _ in extra), target, extra):
            return dataclasses.replace(alone, extras=tuple(c.total(alone.indices) for c, _ in extra))
        if not alone.feasible and alone.certified:
            return alone  # nothing meets the latency budget: nothing meets them all
    if resolution is None:
        resolution = min(0.01, abs(target) / 1000) or 0.01
    limits = [float(target)] + [lim for _, lim in extra]
    costs = [lat] + [c for c, _ in extra]
    res = [float(resolution)] + [max(abs(lim), 1e-300) / extra_bins for lim in limits[1:]]
    evals, best_lb, ub = 0, None, float("inf")
    nterms = len(acc.unary)
    # The Lagrangian answer is feasible and its multipliers bound every configuration: states that cannot beat it
    # are left out of the DP (_pruned), re-pruned with each better feasible answer the DP finds. Exact all the same,
    # and the DP's cost falls with the states it skips (most of them on MobileNetV2's tree: docs/benchmarks.md).
    lagrangian = ows(acc, lat, target, extra)  # (its Viterbi passes are not counted: evaluations are DP passes here)
    bound = lagrangian if lagrangian.feasible and _fits(lagrangian.latency, lagrangian.extras, target, extra) else None
    for step in range(refine + 1):
        bins = [lim / r for lim, r in zip(limits, res)]
        evals += 1
        if best_lb is not None and (bound is None or best_lb.objective > bound.objective):
            bound = dataclasses.replace(best_lb, gamma=lagrangian.gamma, mus=lagrangian.mus)
        dp_acc = acc if bound is None or lagrangian.gamma is None else _pruned(acc, lat, target, extra, bound)
        # The DP runs on the states left (their tables are the memory and most of the time), indices mapped back.
        keep = [np.flatnonzero(np.isfinite(u)) for u in dp_acc.unary]
        r_acc, *r_costs = _restricted([dp_acc] + costs, keep)
        # Rounding every term down relaxes the budgets: the optimum found is an upper bound, and optimal if it
        # truly fits. The same tables also give, for the budgets tightened by j bins, paths whose rounding error
        # (< 1 bin per term) is covered once j >= number of terms: truly feasible candidates, a lower bound.
        paths = [tuple(int(k[i]) for k, i in zip(keep, p))
                 for p in _budget_dp(r_acc, r_costs, bins, res, np.floor, fallbacks=nterms)]
        if not paths:
            return Solution("exact", None, evaluations=evals)  # the relaxation is infeasible, so the problem is
        s_up = _evaluate("exact", paths[0], acc, lat, extra)
        ub = min(ub, s_up.objective)
        if _fits(s_up.latency, s_up.extras, target, extra):
            s_up.evaluations = evals
            return s_up
        for p in paths[1:]:
            s = _evaluate("exact", p, acc, lat, extra)
            if _fits(s.latency, s.extras, target, extra) and (best_lb is None or s.objective > best_lb.objective):
                best_lb = s
        if best_lb is not None and best_lb.objective >= ub - 1e-12 * (1 + abs(ub)):
            break
        # Refine only the budgets the relaxed path overran: the others' rounding did not make it infeasible.
        over = [s_up.latency > target] + [v > lim for v, (_, lim) in zip(s_up.extras, extra)]
        finer = [r / 4 if o else r for r, o in zip(res, over)]
        # max_cells bounds the work and memory of a DP over every state; over fewer states, more cells cost the same
        cap = max_cells * sum(len(u) for u in acc.unary) / max(1, sum(len(k) for k in keep))
        if step == refine or np.prod([lim / r + 1 for lim, r in zip(limits, finer)]) > cap:
            break
        res = finer
    if best_lb is None:
        # The grid is too coarse to hold any path under the conservative rounding (a target a hair above the
        # fastest configuration): fall back on the Lagrangian answer, feasible whenever its search finds one.
        fb = lagrangian
        if not fb.feasible:
            return Solution("exact", None, certified=False, gap=float("inf"), evaluations=evals)
        best_lb = dataclasses.replace(fb, method="exact", gamma=None, mus=())
    best_lb.certified = best_lb.objective >= ub - 1e-12 * (1 + abs(ub))
    best_lb.gap = max(0.0, ub - best_lb.objective)
    best_lb.evaluations = evals
    return best_lb


# ---- baselines -----------------------------------------------------------------------------------------------------
def greedy(acc, lat, target: float, extra=None) -> Solution:
    """From the widest configuration, repeatedly take the one-level shrink with the least score lost per unit of
    budget excess removed (excess of each budget relative to its limit, summed), until every budget holds."""
    acc, lat, extra = _prepare(acc, lat, extra)
    budgets = [(lat, float(target))] + extra
    n = len(acc.unary)
    idx = [len(u) - 1 for u in acc.unary]

    incident = [[] for _ in range(n)]  # per variable, its edges in edge order (on a chain: (l-1, l) then (l, l+1))
    for e, (i, k) in enumerate(acc.edges):
        incident[i].append((e, k, True))
        incident[k].append((e, i, False))

    def local(c: GraphCost, l: int, j: int) -> float:
        # The terms of c that involve variable l when it takes state j.
        v = float(c.unary[l][j])
        for e, other, first in incident[l]:
            v += float(c.pairwise[e][j, idx[other]] if first else c.pairwise[e][idx[other], j])
        return v

    totals = [c.total(idx) for c, _ in budgets]
    steps = 0
    while not all(t <= lim + 1e-9 * max(1.0, abs(lim)) for t, (_, lim) in zip(totals, budgets)):
        def excess(ts):
            return sum(max(0.0, t - lim) / max(abs(lim), 1e-300) for t, (_, lim) in zip(ts, budgets))
        e0 = excess(totals)
        best = None
        for l in range(n):
            if idx[l] == 0:
                continue
            j = idx[l] - 1
            new = [t - local(c, l, idx[l]) + local(c, l, j) for t, (c, _) in zip(totals, budgets)]
            saved = e0 - excess(new)
            lost = local(acc, l, idx[l]) - local(acc, l, j)
            # A step that saves nothing (a noisy table can make a narrower layer look slower) ranks after every
            # useful one, least excess added first, so greedy walks through the dip instead of giving up.
            score = (0, lost / saved) if saved > 0 else (1, -saved)
            if best is None or score < best[0]:
                best = (score, l, new)
        if best is None:
            return Solution("greedy", None, evaluations=steps)
        _, l, totals = best
        idx[l] -= 1
        steps += 1
    return _evaluate("greedy", idx, acc, lat, extra, evaluations=steps)


def uniform(acc, lat, target: float, candidates: Sequence[Sequence[int]] | None = None, extra=None) -> Solution:
    """The last (largest) candidate configuration that meets every budget. ``candidates`` are index tuples in
    increasing width-multiplier order; by default the same relative level in every node."""
    acc, lat, extra = _prepare(acc, lat, extra)
    if candidates is None:
        ks = [len(u) for u in acc.unary]
        grid = np.linspace(0.0, 1.0, 4 * max(ks) + 1)
        candidates = sorted({tuple(int(round(t * (k - 1))) for k in ks) for t in grid}, key=lambda c: sum(c))
    for idx in reversed(list(candidates)):
        sol = _evaluate("uniform", idx, acc, lat, extra)
        if _fits(sol.latency, sol.extras, target, extra):
            return sol
    return Solution("uniform", None)
