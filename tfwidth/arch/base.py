"""The interface an architecture implements, and the registry of architectures by name. No network in here.

An architecture is a stateless object: every method takes the SearchSpace it is asked about (its base widths,
strides, resolution, classes and channel choices are the space's; what they mean is the architecture's). One
instance per architecture is registered (``register``) under its ``name``, which a space records (SearchSpace.arch);
``get(name)`` finds it again, ``presets()`` lists every registered preset.

Methods that build TensorFlow objects (``build``, ``slim_layers``, ``slim_forward``) import TensorFlow themselves:
importing an architecture, like importing tfwidth.space, loads numpy only.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Iterator

import numpy as np

from tfwidth.errors import UsageError


@dataclasses.dataclass(frozen=True)
class LatencyTerm:
    """One term of the latency model: a table over the channel choices of the 1 or 2 width variables it touches.

    name: how table.json and its ``unconstrained`` entries call it. signature: terms with equal signatures (not None)
    are the same layer at another depth (same choices, stride and map sizes), so the fit may let them share one
    table in its prior (tfwidth.latency, SHARED)."""
    name: str
    variables: tuple
    signature: object = None


class Architecture(abc.ABC):
    """Everything one network family brings to the width search.

    ``name``: the registry key, recorded in space.json. ``description``: one line for ``python -m tfwidth.space
    --list``. ``presets``: {preset name: SearchSpace fields (base_widths, strides, resolution, classes, ...)}.
    """
    name: str = ""
    description: str = ""
    presets: dict = {}

    def check(self, space) -> list:
        """What is wrong with ``space`` for this architecture (e.g. its number of width variables), as phrases for
        SearchSpace's one-line error; empty when nothing is."""
        return []

    # ---- the width variables -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def variable_names(self, space) -> tuple:
        """One name per width variable (what messages, stats.json and the template manifest call it)."""

    @abc.abstractmethod
    def edges(self, space) -> tuple:
        """The pairs (i, j), i < j, of width variables that share a cost term (a conv from one to the other): the
        graph every GraphCost of this space lives on. A chain (0, 1), (1, 2), ... is what tfwidth.mrf solves today."""

    @abc.abstractmethod
    def feature_sizes(self, space) -> tuple:
        """Spatial side of the map each width variable's channels are computed on."""

    # ---- counts ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def param_cost(self, space):
        """Deployed parameters (BatchNorm folded, as in the .tflite) as a GraphCost over ``edges``."""

    @abc.abstractmethod
    def mac_cost(self, space):
        """Multiply-accumulates of one image as a GraphCost over ``edges``."""

    # ---- the latency model -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def latency_terms(self, space) -> tuple:
        """The latency table's terms (LatencyTerm), in the order of its entries. A pairwise term's variables must be
        an edge."""

    @abc.abstractmethod
    def latency_prior(self, space, term: LatencyTerm) -> list:
        """The low-dimensional model the fit pulls a term towards: feature vectors over the term's entries (its
        variables' choices, row-major), each a column of the prior's basis (tfwidth.latency, PRIOR)."""

    def table_layout(self, space) -> tuple:
        """How table.json groups the terms: ((key, term index or slice of term indices), ...). Default: one list of
        every term under "terms"."""
        return (("terms", slice(0, len(self.latency_terms(space)))),)

    # ---- the plain model and its converted template ------------------------------------------------------------
    @abc.abstractmethod
    def build(self, space, widths, weight_decay: float = 0.0):
        """The plain tf_keras model at ``widths`` (standard layers only: it is what gets deployed), with an L2 of
        ``weight_decay`` on the kernels the supernet decays too. Its layer names are the contract with
        ``layer_variables`` and with the supernet's slimmable layers (same names, same weight order)."""

    @abc.abstractmethod
    def layer_variables(self, space) -> dict:
        """{plain layer name: the width variable its output channels belong to, "follow" (a depthwise conv: its
        input's variable, found from the data flow) or None (not cut)} for every conv and dense layer: how the
        template's converted tensors are assigned to variables (tfwidth.profile.build_manifest)."""

    # ---- the supernet ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def slim_layers(self, space, seeds: Iterator[int]) -> dict:
        """{attribute name: slimmable layer (tfwidth.arch.slim) or list of them}, each at its max width, named as
        the plain layer it becomes; initializer seeds are drawn from ``seeds``. The Supernet sets them as its
        attributes under these names, which are the keys of its checkpoints: never rename one."""

    @abc.abstractmethod
    def slim_forward(self, space, layers, x, widths, post):
        """Logits of the slimmable layers (attributes of ``layers``, as ``slim_layers`` named them) on images ``x``
        at ``widths`` ([L] int32 tensor or tuple of ints). ``post(h, bn, v, relu=True)`` applies BatchNorm layer
        ``bn`` at variable v's width, then ReLU6 (unless ``relu`` is False: a linear bottleneck) and variable v's
        per-example channel mask."""


def separable_prior(space, term: LatencyTerm) -> list:
    """The prior of a conv-net term (what ``latency_prior`` returns): a + b*c on one variable; on two (a, b),
    u[a] + v[b] + d*a*b (widths scaled to the layer's widest): any per-width cost of either alone (depthwise convs,
    per-op overheads, SIMD-tile steps along either width) plus a 1x1 conv's a*b work; only the interaction of the two
    widths is forced to be bilinear. MobileNetV1's blocks: it predicted the device's validation samples better than
    a plain bilinear a + b*cin + c*cout + d*cin*cout or a quadratic (measured: docs/benchmarks.md, "Figures behind
    the fit's defaults")."""
    ch = [np.asarray(space.choices[v], float) / space.choices[v][-1] for v in term.variables]
    if len(ch) == 1:
        return [np.ones(len(ch[0])), ch[0]]
    ka, kb = len(ch[0]), len(ch[1])
    ia, ib = (g.ravel() for g in np.meshgrid(np.arange(ka), np.arange(kb), indexing="ij"))
    # v[0] is left out: u already carries the constant
    return [ia == j for j in range(ka)] + [ib == j for j in range(1, kb)] + [ch[0][ia] * ch[1][ib]]


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Make ``arch`` known by its name (and its presets by theirs); names must be new."""
    if not arch.name or arch.name in _REGISTRY:
        raise ValueError(f"architecture name {arch.name!r} is empty or taken")
    taken = set(arch.presets) & set(presets())
    if taken:
        raise ValueError(f"presets {sorted(taken)} of {arch.name} are another architecture's")
    _REGISTRY[arch.name] = arch
    return arch


def names() -> tuple:
    """The registered architectures' names, in registration order (what a space's ``arch`` may be)."""
    return tuple(_REGISTRY)


def get(name: str) -> Architecture:
    """The registered architecture called ``name``; a UsageError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown architecture {name!r}; known: {', '.join(_REGISTRY)}") from None


def presets() -> dict:
    """{preset name: (architecture name, SearchSpace fields)} of every registered architecture."""
    return {p: (a.name, dict(fields)) for a in _REGISTRY.values() for p, fields in a.presets.items()}
