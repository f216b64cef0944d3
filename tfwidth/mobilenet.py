"""Plain tf_keras MobileNetV1 at fixed per-layer widths, from standard layers only.

This is what gets deployed (and the reference the supernet is tested against): it loads and trains without tfwidth.
Layer names are the contract used to copy weights in and to find ops in the converted .tflite:
  stem_conv, stem_bn, stem_relu; b{i}_dw, b{i}_dw_bn, b{i}_dw_relu, b{i}_pw, b{i}_pw_bn, b{i}_pw_relu; pool, classifier
"""
from __future__ import annotations

from typing import Sequence

import tfwidth  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tf_keras as keras

from tfwidth.space import SearchSpace


def build_mobilenet(space: SearchSpace, widths: Sequence[int], weight_decay: float = 0.0,
                    name: str = "mobilenet_v1") -> keras.Model:
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
    return keras.Model(inp, out, name=name)


def randomise_statistics(model: keras.Model, seed: int = 0, bias_std: float = 0.2,
                         kernel_scale: float = 1.0) -> keras.Model:
    """Give every BatchNorm non-trivial statistics and the classifier a random bias, in place.

    A freshly built model has identity BatchNorm and zero biases, which the converter folds into identical or
    all-zero constants (merged into one buffer, or dropped): a template or a conversion test built from it would
    not exercise the per-channel slicing it is meant to check."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.5, 1.5, c)])
        elif isinstance(layer, keras.layers.Dense) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * kernel_scale, rng.normal(0, bias_std, bias.shape)])
    return model
