"""GraphCost: the shape of every cost the solver handles (latency, parameters, MACs, loss increases). numpy only.

A configuration takes one channel choice per width variable; a cost adds one term per variable (unary) and one per
edge of the architecture's graph of width variables (pairwise): total = sum_v unary[v][c_v] + sum_(i,j) P_ij[c_i, c_j].
The edges come from the architecture (``SearchSpace.edges``): MobileNetV1's are a chain (i, i+1), an architecture
with shared widths (residual adds) brings a tree. The solvers (tfwidth.mrf) never need to know where a cost came from.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence


@functools.lru_cache(maxsize=None)
def chain_edges(n: int) -> tuple:
    """The edges of a chain of n variables: ((0, 1), (1, 2), ..., (n-2, n-1))."""
    return tuple((i, i + 1) for i in range(n - 1))


@dataclasses.dataclass(frozen=True)
class GraphCost:
    """total(idx) = sum_v unary[v][idx[v]] + sum_e pairwise[e][idx[i], idx[j]] where edges[e] = (i, j).

    unary: n arrays of shape (k_v,); pairwise: one array of shape (k_i, k_j) per edge; edges: pairs of variable
    indices (default: the chain (0, 1), (1, 2), ..., so ``GraphCost(unary, pairwise)`` is the chain cost it always
    was)."""
    unary: tuple
    pairwise: tuple
    edges: tuple = None

    def __post_init__(self):
        edges = chain_edges(len(self.unary)) if self.edges is None else tuple(
            (int(i), int(j)) for i, j in self.edges)
        if len(edges) != len(self.pairwise):
            raise ValueError(f"{len(self.pairwise)} pairwise terms for {len(edges)} edges")
        object.__setattr__(self, "edges", edges)

    @property
    def is_chain(self) -> bool:
        return self.edges == chain_edges(len(self.unary))

    def total(self, idx: Sequence[int]) -> float:
        s = sum(float(u[i]) for u, i in zip(self.unary, idx))
        s += sum(float(p[idx[i], idx[j]]) for (i, j), p in zip(self.edges, self.pairwise))
        return s

    def __add__(self, other: "GraphCost") -> "GraphCost":
        if other.edges != self.edges:
            raise ValueError("costs over different graphs of width variables cannot be added")
        return GraphCost(tuple(a + b for a, b in zip(self.unary, other.unary)),
                         tuple(a + b for a, b in zip(self.pairwise, other.pairwise)), self.edges)

    def scale(self, s: float) -> "GraphCost":
        return GraphCost(tuple(a * s for a in self.unary), tuple(a * s for a in self.pairwise), self.edges)


# The name every caller used while the only graph was MobileNetV1's chain; kept so their imports keep working.
ChainCost = GraphCost
