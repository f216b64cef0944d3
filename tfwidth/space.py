"""SearchSpace: the vocabulary shared by every stage (numpy only, no TensorFlow).

A space is an architecture (tfwidth.arch, by name) plus the numbers that make its width variables concrete: a base
width and a stride per variable, the input resolution, the classes, and the width multipliers each variable's
channel choices are rounded from. A configuration is a tuple of channel counts, one per width variable. What the
variables are (their names, the graph they form, the plain model, the cost terms) is the architecture's: the
properties below ask it.

Every cost the solver handles (latency, parameters, MACs) is a ``GraphCost`` (tfwidth.cost): one vector per variable
(unary) plus one matrix per edge of the architecture's graph of variables (``edges``), so the solver never needs to
know where a cost came from.

    python -m tfwidth.space --preset PRESET [-o space.json]
    python -m tfwidth.space --list
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from typing import Sequence

import numpy as np

from device_profiler import console
from device_profiler.checks import count, number, output_file
from tfwidth import arch as arch_registry
from tfwidth.cost import ChainCost, GraphCost  # noqa: F401  (GraphCost's home is tfwidth.cost; imported from here too)
from tfwidth.errors import ArgumentParser, UsageError


def round_channels(c: float, divisor: int) -> int:
    """``c`` rounded to the nearest multiple of ``divisor`` (halves up), at least ``divisor``: a layer's channel
    count for a width multiplier."""
    # Round half up, not Python's banker's rounding, so 0.5-ties are stable across platforms and readers.
    return max(divisor, int(math.floor(c / divisor + 0.5)) * divisor)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """``base_widths`` and ``strides``: one per width variable (what a stride applies to is the architecture's);
    ``arch``: the architecture's registered name."""
    name: str
    base_widths: tuple
    strides: tuple
    resolution: int = 224
    classes: int = 1000
    min_mult: float = 0.2
    max_mult: float = 1.5
    levels: int = 14
    divisor: int = 8
    in_channels: int = 3
    arch: str = arch_registry.DEFAULT_ARCH

    def __post_init__(self):
        object.__setattr__(self, "base_widths", tuple(int(w) for w in self.base_widths))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        problems = []
        if len(self.base_widths) < 2:
            problems.append("needs at least 2 width variables")
        if len(self.strides) != len(self.base_widths):
            problems.append(f"{len(self.strides)} strides for {len(self.base_widths)} width variables")
        if not 0 < self.min_mult <= self.max_mult:
            problems.append(f"multipliers must satisfy 0 < min ({self.min_mult}) <= max ({self.max_mult})")
        if self.levels < 1:
            problems.append(f"levels must be >= 1, got {self.levels}")
        if self.divisor < 1:
            problems.append(f"divisor must be >= 1, got {self.divisor}")
        if self.resolution < 1 or self.classes < 2:
            problems.append(f"resolution ({self.resolution}) must be >= 1 and classes ({self.classes}) >= 2")
        if any(s not in (1, 2) for s in self.strides):
            problems.append(f"strides must be 1 or 2, got {self.strides}")
        if not problems:  # an unknown name fails here, naming the known ones
            problems += arch_registry.get(self.arch).check(self)
        if problems:
            raise UsageError("invalid search space: " + "; ".join(problems))

    # ---- derived vocabulary -------------------------------------------------------------------------------------
    @property
    def architecture(self) -> arch_registry.Architecture:
        return arch_registry.get(self.arch)

    @property
    def num_layers(self) -> int:
        return len(self.base_widths)

    @property
    def multipliers(self) -> tuple:
        if self.levels == 1:
            return (float(self.max_mult),)
        return tuple(float(m) for m in np.linspace(self.min_mult, self.max_mult, self.levels))

    @property
    def choices(self) -> tuple:
        """Per variable, the sorted distinct channel counts it may take."""
        cached = self.__dict__.get("_choices")
        if cached is None:
            cached = tuple(tuple(sorted({round_channels(b * m, self.divisor) for m in self.multipliers}))
                           for b in self.base_widths)
            object.__setattr__(self, "_choices", cached)
        return cached

    @property
    def num_choices(self) -> tuple:
        return tuple(len(c) for c in self.choices)

    @property
    def max_widths(self) -> tuple:
        return tuple(c[-1] for c in self.choices)

    @property
    def min_widths(self) -> tuple:
        return tuple(c[0] for c in self.choices)

    @property
    def layer_names(self) -> tuple:
        """One name per width variable (the architecture's)."""
        return self.architecture.variable_names(self)

    @property
    def edges(self) -> tuple:
        """The pairs of width variables that share cost terms: the graph of every GraphCost of this space."""
        return self.architecture.edges(self)

    def feature_sizes(self) -> tuple:
        """Spatial side of the map each variable's channels are computed on."""
        return self.architecture.feature_sizes(self)

    def uniform(self, mult: float) -> tuple:
        """Widths of a single width multiplier, each snapped to the nearest channel choice (ties to the wider)."""
        out = []
        for b, ch in zip(self.base_widths, self.choices):
            target = b * mult
            out.append(min(ch, key=lambda c: (abs(c - target), -c)))
        return tuple(out)

    def ladder(self) -> tuple:
        """The uniform network of every width level, narrow to wide (duplicates left out): the networks targets and
        baselines are defined by, so every plan times them and every validation reports them."""
        out = []
        for m in self.multipliers:
            w = self.uniform(m)
            if w not in out:
                out.append(w)
        return tuple(out)

    # ---- configurations -----------------------------------------------------------------------------------------
    def validate(self, widths: Sequence[int], what: str = "widths") -> tuple:
        """``widths`` as a tuple of ints if it is a configuration of this space (one choice per variable), else
        a UsageError naming ``what`` and the offending value."""
        try:
            widths = tuple(int(w) for w in widths)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{what}: {widths!r} should be a list of channel counts (whole numbers)") from None
        if len(widths) != self.num_layers:
            raise UsageError(f"{what} has {len(widths)} values but the space has {self.num_layers} width variables")
        for i, (w, ch) in enumerate(zip(widths, self.choices)):
            if w not in ch:
                raise UsageError(f"{what}: {self.layer_names[i]} width {w} is not a choice of the space "
                                 f"(choices: {', '.join(map(str, ch))})")
        return widths

    def to_indices(self, widths: Sequence[int]) -> tuple:
        """Each width's index among its variable's choices (what the costs and the solver index by)."""
        widths = self.validate(widths)
        return tuple(ch.index(w) for w, ch in zip(widths, self.choices))

    def to_widths(self, indices: Sequence[int]) -> tuple:
        """The channel counts of choice ``indices``, the inverse of ``to_indices``."""
        return tuple(ch[int(i)] for i, ch in zip(indices, self.choices))

    def random_widths(self, rng: np.random.Generator) -> tuple:
        """One configuration drawn uniformly per variable from ``rng``."""
        return tuple(ch[rng.integers(len(ch))] for ch in self.choices)

    # ---- counts -------------------------------------------------------------------------------------------------
    def param_chain(self) -> GraphCost:
        """Deployed parameters (BatchNorm folded into conv biases, as in the .tflite), as a GraphCost."""
        return self.architecture.param_cost(self)

    def mac_chain(self) -> GraphCost:
        """Multiply-accumulates of one image, as a GraphCost."""
        return self.architecture.mac_cost(self)

    def params(self, widths: Sequence[int]) -> int:
        """Deployed parameter count of the network at ``widths`` (``param_chain``)."""
        return int(round(self.param_chain().total(self.to_indices(widths))))

    def macs(self, widths: Sequence[int]) -> int:
        """Multiply-accumulates of one image through the network at ``widths`` (``mac_chain``)."""
        return int(round(self.mac_chain().total(self.to_indices(widths))))

    # ---- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The definition, which the hash covers. The default architecture is left out: spaces written before
        architectures had names are its spaces, and they keep their hash (and their files their bytes)."""
        d = {"name": self.name, "base_widths": list(self.base_widths), "strides": list(self.strides),
             "resolution": self.resolution, "classes": self.classes, "min_mult": self.min_mult,
             "max_mult": self.max_mult, "levels": self.levels, "divisor": self.divisor,
             "in_channels": self.in_channels}
        if self.arch != arch_registry.DEFAULT_ARCH:
            d["arch"] = self.arch
        return d

    @property
    def space_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        # Derived fields are written for readers (and the device), never read back: the hash covers the definition.
        d = self.to_dict()
        d["space_hash"] = self.space_hash
        d["choices"] = [list(c) for c in self.choices]
        d["layer_names"] = list(self.layer_names)
        return d

    @classmethod
    def from_dict(cls, d: dict, what: str = "space JSON") -> "SearchSpace":
        if not isinstance(d, dict):
            raise UsageError(f"{what} should be a JSON object with the space's fields; regenerate it with "
                             f"python -m tfwidth.space -o space.json")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - {"space_hash", "choices", "layer_names"}
        if unknown:
            raise UsageError(f"{what} has unknown keys {sorted(unknown)}")
        try:
            space = cls(**{k: v for k, v in d.items() if k in fields})
            space.choices  # noqa: B018 - a bad number (NaN, a string) fails here rather than in the first user
        except (TypeError, ValueError, OverflowError) as e:
            raise UsageError(f"{what} is malformed ({e}); regenerate it with python -m tfwidth.space") from None
        except UsageError as e:
            raise UsageError(f"{what}: {e}") from None
        if "space_hash" in d and d["space_hash"] != space.space_hash:
            raise UsageError(f"{what} records hash {d['space_hash']} but its definition hashes to "
                             f"{space.space_hash}: the file was edited; remove the space_hash key or regenerate it")
        return space

    @classmethod
    def load(cls, path) -> "SearchSpace":
        from tfwidth.artifacts import read_json
        d = read_json(path, "space")
        if "space" in d and isinstance(d["space"], dict):  # any artefact that embeds its space
            d = d["space"]
        return cls.from_dict(d, f"space {path}")

    def save(self, path) -> None:
        from tfwidth.artifacts import write_json
        write_json(path, self.to_json())

    def describe(self) -> str:
        sizes = self.feature_sizes()
        lines = [f"space {self.name} ({self.arch})  hash {self.space_hash}  {self.resolution}px  {self.classes} "
                 f"classes  mult {self.min_mult}..{self.max_mult} in {self.levels} levels, multiples of {self.divisor}",
                 f"{'layer':<8} {'base':>5} {'stride':>6} {'map':>5}  choices"]
        for name, b, st, sz, ch in zip(self.layer_names, self.base_widths, self.strides, sizes, self.choices):
            lines.append(f"{name:<8} {b:>5} {st:>6} {sz:>3}x{sz:<3} {len(ch):>2}: {' '.join(map(str, ch))}")
        mx, mn = self.max_widths, self.min_widths
        lines.append(f"max: {self.params(mx) / 1e6:.2f} M params, {self.macs(mx) / 1e6:.1f} M MACs; "
                     f"min: {self.params(mn) / 1e6:.3f} M params, {self.macs(mn) / 1e6:.2f} M MACs; "
                     f"{np.prod([float(n) for n in self.num_choices]):.3g} configurations")
        return "\n".join(lines)


def preset(name: str, **overrides) -> SearchSpace:
    """The registered preset ``name`` (tfwidth.arch.presets), with the fields in ``overrides`` that are not None."""
    known = arch_registry.presets()
    if name not in known:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(known)}")
    arch, kw = known[name]
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return SearchSpace(name=name, arch=arch, **kw)


def tiny_space(resolution: int = 16, classes: int = 10, levels: int = 4, base: int = 16, layers: int = 4) -> SearchSpace:
    """A small space of the default architecture (a chain of ``layers`` width variables), for tests and demos."""
    strides = (1, 2, 1, 2, 1, 1, 1)[:layers] if layers <= 7 else (1,) * layers
    return SearchSpace(name="tiny", base_widths=(base,) * layers, strides=strides, resolution=resolution,
                       classes=classes, min_mult=0.5, max_mult=1.5, levels=levels, divisor=4)


def add_space_options(parser, required: bool = False, default: str | None = None) -> None:
    """--space FILE or --preset NAME (one of them; ``required``, else ``default`` says in the help what is used
    without either): how every CLI that starts from a space is told which (read back with ``space_from_args``)."""
    g = parser.add_mutually_exclusive_group(required=required)
    tail = f" (default: {default})" if default else ""
    g.add_argument("--space", help=f"space.json (python -m tfwidth.space -o space.json){tail}")
    g.add_argument("--preset", help=f"a preset instead of --space: {', '.join(arch_registry.presets())}; "
                                    f"python -m tfwidth.space --list")


def space_from_args(a, default=None) -> SearchSpace:
    """The space ``add_space_options`` asked for: --space's file, --preset's preset, else ``default()``."""
    if getattr(a, "space", None):
        return SearchSpace.load(a.space)
    if getattr(a, "preset", None):
        return preset(a.preset)
    if default is None:
        raise UsageError("give --space space.json or --preset NAME")
    return default()


def list_presets() -> str:
    """Every registered architecture and its presets, one line each (``--list``)."""
    lines = []
    for a in arch_registry.names():
        lines.append(f"{a}  {arch_registry.get(a).description}")
        for p, (owner, fields) in arch_registry.presets().items():
            if owner == a:
                s = preset(p)
                lines.append(f"  {p:<24} {s.num_layers} width variables, {s.resolution} px, {s.classes} classes, "
                             f"hash {s.space_hash}")
    return "\n".join(lines)


def main(argv=None) -> int:
    known = ", ".join(arch_registry.presets())
    p = ArgumentParser(prog="python -m tfwidth.space", description=(
        "Print a width search space (its width variables and their channel choices) and write it as space.json, "
        "the file every other stage reads."))
    p.add_argument("--preset", default=arch_registry.SPACE_PRESET,
                   help=f"one of: {known} (default {arch_registry.SPACE_PRESET})")
    p.add_argument("--list", action="store_true", help="list the architectures and their presets, and exit")
    p.add_argument("--resolution", type=count(1, 8192), help="input side in pixels (default: the preset's)")
    p.add_argument("--classes", type=count(2, 10**6), help="number of classes (default: the preset's)")
    p.add_argument("--min-mult", type=number(0, 100, lo_open=True), help="smallest width multiplier (default 0.2)")
    p.add_argument("--max-mult", type=number(0, 100, lo_open=True), help="largest width multiplier (default 1.5)")
    p.add_argument("--levels", type=count(1, 1000), help="multipliers between min and max before rounding (default 14)")
    p.add_argument("--divisor", type=count(1, 1024), help="channel counts are multiples of this (default 8)")
    p.add_argument("-o", "--output", type=output_file, help="write the space as JSON here")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.list:
        print(list_presets())
        return 0
    space = preset(a.preset, resolution=a.resolution, classes=a.classes, min_mult=a.min_mult,
                   max_mult=a.max_mult, levels=a.levels, divisor=a.divisor)
    print(space.describe())
    if a.output:
        space.save(a.output)
        print(console.wrote([a.output], time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    from tfwidth.errors import run_cli
    sys.exit(run_cli(main))
