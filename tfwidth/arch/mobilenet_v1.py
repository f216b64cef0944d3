"""MobileNetV1 (Howard et al., 2017) as a width-search architecture: everything the toolkit knows about it.

A 3x3 stem conv, 13 depthwise-separable blocks (3x3 depthwise conv, then 1x1 pointwise conv), global pooling and a
classifier; BatchNorm and ReLU6 after every conv. One width variable per conv that sets a channel count: the stem
and the pointwise conv of each block; block i's depthwise conv runs on variable i-1's channels. So a configuration is
a tuple of 14 channel counts and every cost is a chain: block i couples variables i-1 and i.

The plain model's layer names are the contract with the supernet (same names) and the converted template
(``layer_variables``): stem_conv, stem_bn, stem_relu; b{i}_dw, b{i}_dw_bn, b{i}_dw_relu, b{i}_pw, b{i}_pw_bn,
b{i}_pw_relu; pool, classifier.
"""
from __future__ import annotations

import numpy as np

from tfwidth.arch.base import Architecture, LatencyTerm, separable_prior
from tfwidth.cost import GraphCost, chain_edges

BASE_WIDTHS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
# Stride of each width variable's spatial op: the stem conv, then each block's depthwise conv.
IMAGENET_STRIDES = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
# 32 px CIFAR images: no stem stride, downsample in blocks 2, 4, 6 -> 4x4 final maps (the usual CIFAR MobileNet).
CIFAR_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1)


class MobileNetV1(Architecture):
    name = "mobilenet_v1"
    description = ("MobileNetV1 (3x3 stem conv, 13 depthwise-separable blocks, pooling, classifier); a width "
                   "variable per stem and pointwise conv, in a chain")
    presets = {
        "mobilenet_v1": dict(base_widths=BASE_WIDTHS, strides=IMAGENET_STRIDES, resolution=224, classes=1000),
        "mobilenet_v1_cifar": dict(base_widths=BASE_WIDTHS, strides=CIFAR_STRIDES, resolution=32, classes=10),
    }

    # ---- the width variables -----------------------------------------------------------------------------------
    def variable_names(self, space) -> tuple:
        return ("stem",) + tuple(f"block{i}" for i in range(1, space.num_layers))

    def edges(self, space) -> tuple:
        return chain_edges(space.num_layers)

    def feature_sizes(self, space) -> tuple:
        # TF 'same' padding: each op's output side is ceil(input side / stride)
        sizes, s = [], space.resolution
        for st in space.strides:
            s = -(-s // st)
            sizes.append(s)
        return tuple(sizes)

    # ---- counts ------------------------------------------------------------------------------------------------
    def param_cost(self, space) -> GraphCost:
        ch = [np.asarray(c, dtype=np.float64) for c in space.choices]
        unary = [np.zeros(len(c)) for c in ch]
        unary[0] = ch[0] * (9 * space.in_channels + 1)  # stem 3x3 conv + bias
        unary[-1] = unary[-1] + ch[-1] * space.classes + space.classes  # classifier
        pairwise = []
        for i in range(1, space.num_layers):
            cin, cout = ch[i - 1][:, None], ch[i][None, :]
            pairwise.append(cin * 10 + cin * cout + cout)  # dw 3x3 + bias, pw + bias
        return GraphCost(tuple(unary), tuple(pairwise), self.edges(space))

    def mac_cost(self, space) -> GraphCost:
        ch = [np.asarray(c, dtype=np.float64) for c in space.choices]
        hw = [s * s for s in self.feature_sizes(space)]
        unary = [np.zeros(len(c)) for c in ch]
        unary[0] = hw[0] * 9 * space.in_channels * ch[0]
        unary[-1] = unary[-1] + ch[-1] * space.classes
        pairwise = []
        for i in range(1, space.num_layers):
            cin, cout = ch[i - 1][:, None], ch[i][None, :]
            pairwise.append(hw[i] * 9 * cin + hw[i] * cin * cout)
        return GraphCost(tuple(unary), tuple(pairwise), self.edges(space))

    # ---- the latency model -------------------------------------------------------------------------------------
    def latency_terms(self, space) -> tuple:
        """stem[c_1] (the stem conv on the image), block i[c_(i-1), c_i] (its depthwise and pointwise convs),
        head[c_n] (pooling and the classifier). A block's signature: its width choices, stride and map sizes, e.g.
        the five stride-1 blocks at the 512-channel level are alike."""
        names, sizes, ch = self.variable_names(space), self.feature_sizes(space), space.choices
        blocks = tuple(LatencyTerm(names[i], (i - 1, i), (tuple(ch[i - 1]), tuple(ch[i]), space.strides[i],
                                                          sizes[i - 1], sizes[i]))
                       for i in range(1, space.num_layers))
        return (LatencyTerm("stem", (0,)),) + blocks + (LatencyTerm("head", (space.num_layers - 1,)),)

    def latency_prior(self, space, term: LatencyTerm) -> list:
        """Stem and head: a + b*c. Block: u[cin] + v[cout] + d*cin*cout (``separable_prior``)."""
        return separable_prior(space, term)

    def table_layout(self, space) -> tuple:
        return (("stem", 0), ("blocks", slice(1, space.num_layers)), ("head", space.num_layers))

    # ---- the plain model and its converted template ------------------------------------------------------------
    def build(self, space, widths, weight_decay: float = 0.0):
        import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
        import tf_keras as keras
        widths = space.validate(widths)
        reg = keras.regularizers.l2(weight_decay) if weight_decay else None
        x = inp = keras.Input((space.resolution, space.resolution, space.in_channels), name="image")
        x = keras.layers.Conv2D(widths[0], 3, strides=space.strides[0], padding="same", use_bias=False,
                                kernel_regularizer=reg, name="stem_conv")(x)
        x = keras.layers.BatchNormalization(name="stem_bn")(x)
        x = keras.layers.ReLU(6.0, name="stem_relu")(x)
        for i in range(1, space.num_layers):
            x = keras.layers.DepthwiseConv2D(3, strides=space.strides[i], padding="same", use_bias=False,
                                             name=f"b{i}_dw")(x)
            x = keras.layers.BatchNormalization(name=f"b{i}_dw_bn")(x)
            x = keras.layers.ReLU(6.0, name=f"b{i}_dw_relu")(x)
            x = keras.layers.Conv2D(widths[i], 1, use_bias=False, kernel_regularizer=reg, name=f"b{i}_pw")(x)
            x = keras.layers.BatchNormalization(name=f"b{i}_pw_bn")(x)
            x = keras.layers.ReLU(6.0, name=f"b{i}_pw_relu")(x)
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        out = keras.layers.Dense(space.classes, kernel_regularizer=reg, name="classifier")(x)
        return keras.Model(inp, out, name=self.name)

    def layer_variables(self, space) -> dict:
        out = {"stem_conv": 0, "classifier": None}
        for i in range(1, space.num_layers):
            out[f"b{i}_pw"] = i
            out[f"b{i}_dw"] = "follow"
        return out

    # ---- the supernet ------------------------------------------------------------------------------------------
    def slim_layers(self, space, seeds) -> dict:
        from tfwidth.arch.slim import SlimBatchNorm, SlimConv, SlimDense, SlimDepthwise, SlimPointwise
        mx = space.max_widths
        # attribute order = the order Keras lists the layers and variables in: kept as it always was
        out = {"stem_conv": SlimConv(space.in_channels, mx[0], space.strides[0], next(seeds), name="stem_conv"),
               "stem_bn": SlimBatchNorm(mx[0], name="stem_bn"), "dw": [], "dw_bn": [], "pw": [], "pw_bn": []}
        for i in range(1, space.num_layers):
            out["dw"].append(SlimDepthwise(mx[i - 1], space.strides[i], next(seeds), name=f"b{i}_dw"))
            out["dw_bn"].append(SlimBatchNorm(mx[i - 1], name=f"b{i}_dw_bn"))
            out["pw"].append(SlimPointwise(mx[i - 1], mx[i], next(seeds), name=f"b{i}_pw"))
            out["pw_bn"].append(SlimBatchNorm(mx[i], name=f"b{i}_pw_bn"))
        out["classifier"] = SlimDense(mx[-1], space.classes, next(seeds), name="classifier")
        return out

    def slim_forward(self, space, layers, x, widths, post):
        import tensorflow as tf
        h = post(layers.stem_conv(x, widths[0]), layers.stem_bn, 0)
        for i in range(1, space.num_layers):
            h = post(layers.dw[i - 1](h), layers.dw_bn[i - 1], i - 1)
            h = post(layers.pw[i - 1](h, widths[i]), layers.pw_bn[i - 1], i)
        return layers.classifier(tf.reduce_mean(h, [1, 2]))
