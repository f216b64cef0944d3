"""MobileNetV2 (Sandler et al., 2018) as a width-search architecture: everything the toolkit knows about it.

A 3x3 stem conv, 17 inverted-residual blocks in 7 stages, a 1x1 conv, global pooling and a classifier. A block with
expansion t > 1 is: 1x1 expand conv (ReLU6), 3x3 depthwise conv at the block's stride (ReLU6), 1x1 project conv
(linear); with t = 1 (the first block) the depthwise conv runs on its input directly. BatchNorm after every conv.
Every block of a stage but the first adds its input to its output (stride 1, same channels).

Width variables, in data-flow order: ``stem``; ``stage1``; then per block b >= 2 its expansion ``expand{b}`` and,
after a stage's first expansion, that stage's output width ``stage{s}``; ``last`` (the 1x1 conv). The residual adds
force every block of a stage to output the same channels, so one variable holds a stage's output width; an
expansion width is free. The variables form a tree, not a chain: a stage's first block joins the previous stage's
width to its expansion and that to the stage's width (a path), every further block hangs its expansion off the
stage's width (a leaf).

The space's base_widths and strides are one per variable in that order. A stage variable's stride is its first
block's; an expansion's is its block's depthwise stride (so equal to its stage's for a first block, else 1). A space
may have the first k stages only (tests use small ones): the number of variables says which k.

The plain model's layer names are the contract with the supernet (same names) and the converted template
(``layer_variables``): stem_conv, stem_bn, stem_relu; b{b}_expand, b{b}_expand_bn, b{b}_expand_relu (blocks with an
expansion), b{b}_dw, b{b}_dw_bn, b{b}_dw_relu, b{b}_project, b{b}_project_bn, b{b}_add (residual blocks); last_conv,
last_bn, last_relu; pool, classifier.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from tfwidth.arch.base import Architecture, LatencyTerm, separable_prior
from tfwidth.cost import GraphCost

# (expansion t, output channels c, repeats n, stride s) of each stage: the paper's Table 2.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280


@dataclasses.dataclass(frozen=True)
class _Block:
    """Block ``index`` (1-based) of stage ``stage``: input, expansion (None: t = 1) and output variables, the
    depthwise stride, map sides before and after it, and whether it adds its input (every block but a stage's
    first)."""
    index: int
    stage: int
    inp: int
    expand: int | None
    out: int
    stride: int
    size_in: int
    size_out: int
    residual: bool


def _variables(stages: int) -> tuple:
    """Per variable (in order): (kind, stage, block), kind "stem" | "stage" | "expand" | "last"."""
    out, block = [("stem", 0, 0)], 0
    for s, (t, _, n, _) in enumerate(STAGES[:stages], 1):
        for r in range(n):
            block += 1
            if t > 1:
                out.append(("expand", s, block))
            if r == 0:
                out.append(("stage", s, block))
    return tuple(out) + (("last", stages, block),)


def _first_block(stage: int) -> int:
    """The index (1-based) of ``stage``'s first block."""
    return 1 + sum(n for _, _, n, _ in STAGES[:stage - 1])


# number of variables -> stages: the spaces of the first k stages have distinct sizes
_STAGES_OF = {len(_variables(k)): k for k in range(1, len(STAGES) + 1)}


def base_widths(stages: int = len(STAGES)) -> tuple:
    """The network's own width per variable: an expansion's is t times its input's."""
    out = []
    for kind, s, b in _variables(stages):
        if kind == "stem":
            out.append(STEM)
        elif kind == "stage":
            out.append(STAGES[s - 1][1])
        elif kind == "last":
            out.append(LAST)
        else:  # the block's input: the previous stage's width for a stage's first block, else the stage's own
            out.append(STAGES[s - 1][0] * (STAGES[s - 2][1] if b == _first_block(s) else STAGES[s - 1][1]))
    return tuple(out)


def strides(stem: int, stage_strides) -> tuple:
    """Per variable, from the stem's stride and each stage's (one per stage, the space's first k stages)."""
    out = []
    for kind, s, b in _variables(len(stage_strides)):
        if kind == "stem":
            out.append(stem)
        elif kind == "last":
            out.append(1)
        else:
            out.append(stage_strides[s - 1] if kind == "stage" or b == _first_block(s) else 1)
    return tuple(out)


IMAGENET_STRIDES = strides(2, [st for *_, st in STAGES])
# 32 px CIFAR images: stem and second stage at stride 1, so the last map is 4x4.
CIFAR_STRIDES = strides(1, (1, 1, 2, 2, 1, 2, 1))


@functools.lru_cache(maxsize=64)
def _structure(n_vars: int, space_strides: tuple, resolution: int) -> tuple:
    """The blocks (``_Block``, in order) of a space with ``n_vars`` variables, these strides and resolution."""
    kinds = _variables(_STAGES_OF[n_vars])
    stage_var = {s: v for v, (kind, s, _) in enumerate(kinds) if kind == "stage"}
    stage_var[0] = 0  # the first stage's input is the stem
    expand_var = {b: v for v, (kind, _, b) in enumerate(kinds) if kind == "expand"}
    stage_of = {b: s for kind, s, b in kinds if kind in ("stage", "expand")}
    first_blocks = {b for kind, _, b in kinds if kind == "stage"}
    blocks, size = [], -(-resolution // space_strides[0])
    for b in sorted(stage_of):
        s, e, first = stage_of[b], expand_var.get(b), b in first_blocks
        stride = space_strides[stage_var[s]] if first else 1
        size_out = -(-size // stride)
        blocks.append(_Block(b, s, stage_var[s - 1] if first else stage_var[s], e, stage_var[s], stride, size,
                             size_out, not first))
        size = size_out
    return tuple(blocks)


class MobileNetV2(Architecture):
    name = "mobilenet_v2"
    description = ("MobileNetV2 (3x3 stem conv, 17 inverted-residual blocks, 1x1 conv, pooling, classifier); a "
                   "width variable per stem, stage output (tied by the residual adds), expansion and last conv, "
                   "in a tree")
    presets = {
        "mobilenet_v2": dict(base_widths=base_widths(), strides=IMAGENET_STRIDES, resolution=224, classes=1000),
        "mobilenet_v2_cifar": dict(base_widths=base_widths(), strides=CIFAR_STRIDES, resolution=32, classes=10),
    }

    # ---- structure -------------------------------------------------------------------------------------------
    def check(self, space) -> list:
        n = space.num_layers
        if n not in _STAGES_OF:
            return [f"{self.name} has {', '.join(map(str, sorted(_STAGES_OF)))} width variables (its first "
                    f"1..{len(STAGES)} stages), got {n}"]
        kinds = _variables(_STAGES_OF[n])
        want = strides(space.strides[0], [space.strides[v] for v, (kind, _, _) in enumerate(kinds) if kind == "stage"])
        if tuple(space.strides) != want:
            return [f"{self.name}: strides {tuple(space.strides)} are inconsistent: an expansion's stride is its "
                    f"stage's in the stage's first block and 1 after it, the last conv's 1 ({want} would be)"]
        return []

    def blocks(self, space) -> tuple:
        """The space's blocks (``_Block``), in order."""
        return _structure(space.num_layers, tuple(space.strides), space.resolution)

    # ---- the width variables -----------------------------------------------------------------------------------
    def variable_names(self, space) -> tuple:
        names = []
        for kind, s, b in _variables(_STAGES_OF[space.num_layers]):
            names.append({"stem": "stem", "last": "last", "stage": f"stage{s}", "expand": f"expand{b}"}[kind])
        return tuple(names)

    def edges(self, space) -> tuple:
        edges = set()
        for blk in self.blocks(space):
            if blk.expand is None:
                edges.add((blk.inp, blk.out))
            else:
                edges.add(tuple(sorted((blk.inp, blk.expand))))
                edges.add(tuple(sorted((blk.expand, blk.out))))
        L = space.num_layers
        edges.add((self.blocks(space)[-1].out, L - 1))
        return tuple(sorted(edges))

    def feature_sizes(self, space) -> tuple:
        sizes = [0] * space.num_layers
        sizes[0] = -(-space.resolution // space.strides[0])
        for blk in self.blocks(space):
            for v in (blk.expand, blk.out):
                if v is not None:
                    sizes[v] = blk.size_out
        sizes[-1] = self.blocks(space)[-1].size_out
        return tuple(sizes)

    # ---- counts ------------------------------------------------------------------------------------------------
    def _cost(self, space, stem, dw, pw, last, head) -> GraphCost:
        """A GraphCost from per-layer counts: stem(c), dw(c, side), pw(c_in, c_out, side), last(c_in, c_out, side),
        head(c) (arrays broadcast over choices), each put on the variables it touches."""
        ch = [np.asarray(c, dtype=np.float64) for c in space.choices]
        edges = self.edges(space)
        unary = [np.zeros(len(c)) for c in ch]
        pairwise = {e: np.zeros((len(ch[e[0]]), len(ch[e[1]]))) for e in edges}

        def add(a, b, table):  # a table over (choices of a, choices of b), added to the edge in its order
            if a < b:
                pairwise[(a, b)] += table
            else:
                pairwise[(b, a)] += table.T

        unary[0] += stem(ch[0])
        for blk in self.blocks(space):
            cin, cout = ch[blk.inp][:, None], ch[blk.out][None, :]
            if blk.expand is None:
                add(blk.inp, blk.out, dw(cin, blk.size_out) + pw(cin, cout, blk.size_out))
                continue
            e = ch[blk.expand]
            add(blk.inp, blk.expand, pw(cin, e[None, :], blk.size_in) + dw(e[None, :], blk.size_out))
            add(blk.expand, blk.out, pw(e[:, None], cout, blk.size_out))
        L, top = space.num_layers, self.blocks(space)[-1]
        add(top.out, L - 1, last(ch[top.out][:, None], ch[L - 1][None, :], top.size_out))
        unary[L - 1] += head(ch[L - 1])
        return GraphCost(tuple(unary), tuple(pairwise[e] for e in edges), edges)

    def param_cost(self, space) -> GraphCost:
        # BatchNorm folded into a bias per output channel, as in the .tflite
        k = space.classes
        return self._cost(space, stem=lambda c: c * (9 * space.in_channels + 1), dw=lambda c, s: c * 10,
                          pw=lambda a, b, s: a * b + b, last=lambda a, b, s: a * b + b, head=lambda c: c * k + k)

    def mac_cost(self, space) -> GraphCost:
        s0 = self.feature_sizes(space)[0]
        return self._cost(space, stem=lambda c: s0 * s0 * 9 * space.in_channels * c,
                          dw=lambda c, s: s * s * 9 * c,
                          pw=lambda a, b, s: s * s * a * b,
                          last=lambda a, b, s: s * s * a * b,
                          head=lambda c: c * space.classes)

    # ---- the latency model -------------------------------------------------------------------------------------
    def latency_terms(self, space) -> tuple:
        """stem[stem] (the stem conv); block1[stem, stage1] (its depthwise and project convs); per later block: a
        stage's first block as two terms, block{b}_expand[input, expansion] (expand and depthwise convs) and
        block{b}_project[expansion, stage] (project conv), every further block as one, block{b}[stage, expansion]
        (expand, depthwise, project, add); last[stage7, last] (the 1x1 conv); head[last] (pooling, classifier).
        A term's variables are in index order (the edge it lies on). Signature: the kind of term, its width
        choices, stride and map sides: e.g. a stage's later blocks are alike."""
        ch = space.choices
        terms = [LatencyTerm("stem", (0,))]

        def term(name, kind, a, b, blk):
            sig = (kind, tuple(ch[a]), tuple(ch[b]), blk.stride, blk.size_in, blk.size_out)
            terms.append(LatencyTerm(name, (a, b), sig))

        for blk in self.blocks(space):
            if blk.expand is None:
                term(f"block{blk.index}", "dw_project", blk.inp, blk.out, blk)
            elif not blk.residual:
                term(f"block{blk.index}_expand", "expand_dw", blk.inp, blk.expand, blk)
                term(f"block{blk.index}_project", "project", blk.expand, blk.out, blk)
            else:
                term(f"block{blk.index}", "residual", blk.out, blk.expand, blk)
        L = space.num_layers
        terms.append(LatencyTerm("last", (self.blocks(space)[-1].out, L - 1)))
        terms.append(LatencyTerm("head", (L - 1,)))
        return tuple(terms)

    def latency_prior(self, space, term: LatencyTerm) -> list:
        """Every term, as MobileNetV1's: a + b*c for one variable, u[a] + v[b] + d*a*b for two (any cost of either
        width alone, plus the 1x1 convs' a*b work: expand, project and a residual block's both)."""
        return separable_prior(space, term)

    def table_layout(self, space) -> tuple:
        n = len(self.latency_terms(space))
        return (("stem", 0), ("blocks", slice(1, n - 2)), ("last", n - 2), ("head", n - 1))

    # ---- the plain model and its converted template ------------------------------------------------------------
    def build(self, space, widths, weight_decay: float = 0.0):
        import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
        import tf_keras as keras
        widths = space.validate(widths)
        reg = keras.regularizers.l2(weight_decay) if weight_decay else None
        L = keras.layers

        def conv_bn(x, c, conv, prefix, kernel=1, stride=1, relu=True):
            """conv ``conv``, then ``prefix``_bn and (unless ``relu`` is False: a linear bottleneck) ``prefix``_relu"""
            x = L.Conv2D(c, kernel, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg,
                         name=conv)(x)
            x = L.BatchNormalization(name=f"{prefix}_bn")(x)
            return L.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x

        x = inp = keras.Input((space.resolution, space.resolution, space.in_channels), name="image")
        x = conv_bn(x, widths[0], "stem_conv", "stem", kernel=3, stride=space.strides[0])
        for blk in self.blocks(space):
            h, p = x, f"b{blk.index}"
            if blk.expand is not None:
                h = conv_bn(h, widths[blk.expand], f"{p}_expand", f"{p}_expand")
            h = L.DepthwiseConv2D(3, strides=blk.stride, padding="same", use_bias=False, name=f"{p}_dw")(h)
            h = L.BatchNormalization(name=f"{p}_dw_bn")(h)
            h = L.ReLU(6.0, name=f"{p}_dw_relu")(h)
            h = conv_bn(h, widths[blk.out], f"{p}_project", f"{p}_project", relu=False)
            x = L.Add(name=f"{p}_add")([x, h]) if blk.residual else h
        x = conv_bn(x, widths[-1], "last_conv", "last")
        x = L.GlobalAveragePooling2D(name="pool")(x)
        out = L.Dense(space.classes, kernel_regularizer=reg, name="classifier")(x)
        return keras.Model(inp, out, name=self.name)

    def layer_variables(self, space) -> dict:
        out = {"stem_conv": 0}
        for blk in self.blocks(space):
            if blk.expand is not None:
                out[f"b{blk.index}_expand"] = blk.expand
            out[f"b{blk.index}_dw"] = "follow"
            out[f"b{blk.index}_project"] = blk.out
        out["last_conv"] = space.num_layers - 1
        out["classifier"] = None
        return out

    # ---- the supernet ------------------------------------------------------------------------------------------
    def slim_layers(self, space, seeds) -> dict:
        from tfwidth.arch.slim import SlimBatchNorm, SlimConv, SlimDense, SlimDepthwise, SlimPointwise
        mx = space.max_widths
        out = {"stem_conv": SlimConv(space.in_channels, mx[0], space.strides[0], next(seeds), name="stem_conv"),
               "stem_bn": SlimBatchNorm(mx[0], name="stem_bn"), "expand": [], "expand_bn": [], "dw": [],
               "dw_bn": [], "project": [], "project_bn": []}
        for blk in self.blocks(space):
            p, mid = f"b{blk.index}", mx[blk.inp if blk.expand is None else blk.expand]
            if blk.expand is not None:
                out["expand"].append(SlimPointwise(mx[blk.inp], mid, next(seeds), name=f"{p}_expand"))
                out["expand_bn"].append(SlimBatchNorm(mid, name=f"{p}_expand_bn"))
            out["dw"].append(SlimDepthwise(mid, blk.stride, next(seeds), name=f"{p}_dw"))
            out["dw_bn"].append(SlimBatchNorm(mid, name=f"{p}_dw_bn"))
            out["project"].append(SlimPointwise(mid, mx[blk.out], next(seeds), name=f"{p}_project"))
            out["project_bn"].append(SlimBatchNorm(mx[blk.out], name=f"{p}_project_bn"))
        L = space.num_layers
        out["last_conv"] = SlimPointwise(mx[self.blocks(space)[-1].out], mx[L - 1], next(seeds), name="last_conv")
        out["last_bn"] = SlimBatchNorm(mx[L - 1], name="last_bn")
        out["classifier"] = SlimDense(mx[L - 1], space.classes, next(seeds), name="classifier")
        return out

    def slim_forward(self, space, layers, x, widths, post):
        import tensorflow as tf
        x = post(layers.stem_conv(x, widths[0]), layers.stem_bn, 0)
        j = 0  # index into the lists of expand layers (blocks with an expansion only)
        for i, blk in enumerate(self.blocks(space)):
            h, mid = x, blk.inp
            if blk.expand is not None:
                h = post(layers.expand[j](h, widths[blk.expand]), layers.expand_bn[j], blk.expand)
                mid, j = blk.expand, j + 1
            h = post(layers.dw[i](h), layers.dw_bn[i], mid)
            h = post(layers.project[i](h, widths[blk.out]), layers.project_bn[i], blk.out, relu=False)
            x = x + h if blk.residual else h
        L = space.num_layers
        x = post(layers.last_conv(x, widths[L - 1]), layers.last_bn, L - 1)
        return layers.classifier(tf.reduce_mean(x, [1, 2]))
