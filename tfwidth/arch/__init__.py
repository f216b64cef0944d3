"""Architectures: what each network family brings to the width search, behind one interface (tfwidth.arch.base).

    from tfwidth import arch
    arch.get("mobilenet_v1").build(space, widths)   # or space.architecture, for the space's own
    arch.names(), arch.presets()                    # python -m tfwidth.space --list

Built in: mobilenet_v1 (tfwidth/arch/mobilenet_v1.py), mobilenet_v2 (tfwidth/arch/mobilenet_v2.py). A new architecture is a module here whose Architecture
subclass is registered (``register(MyNet())``) and imported below; nothing outside this package names a network.
"""
from tfwidth.arch.base import Architecture, LatencyTerm, get, names, presets, register  # noqa: F401
from tfwidth.arch.mobilenet_v1 import MobileNetV1
from tfwidth.arch.mobilenet_v2 import MobileNetV2

register(MobileNetV1())
register(MobileNetV2())

# The architecture of spaces that name none: every space.json written before architectures had names. Its spaces
# leave the name out of their definition, so their space_hash is what it always was.
DEFAULT_ARCH = "mobilenet_v1"
# What `python -m tfwidth.space` describes with no --preset.
SPACE_PRESET = "mobilenet_v1"
# The offline demo's and the pipeline's space (tfwidth.train with no arguments, tfwidth.pipeline, tfwidth.data):
# small images that train in minutes on a CPU.
DEFAULT_PRESET = "mobilenet_v1_cifar"
