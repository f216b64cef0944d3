"""Builds the max-width .tflite template (+ its manifest) and the plans of configurations the device times.

    python -m tfwidth.profile template --space space.json -o template.tflite [--quantize int8]
    python -m tfwidth.profile plan --space space.json --count N [--kind biased|random] [--seed S] -o plan.json

The device (``python -m device_profiler``) cuts every configuration of a plan out of the template without the
converter, guided by the manifest (template.json beside the .tflite): for each width variable, which tensors and
which axis of each it cuts. The manifest is found here by following the data flow of the converted graph; the only
names used are the Keras layer names of the conv/FC ops (the architecture's ``layer_variables`` says which variable
a conv's outputs belong to), and every cut axis is checked against the variable's max width.
"""
from __future__ import annotations

import hashlib
import re
import sys
import time
from pathlib import Path

import numpy as np

from tfwidth import mrf
from tfwidth.artifacts import atomic_write_bytes, check_space, read_json, write_json
from tfwidth.convert import convert as convert_model, randomise_statistics
from device_profiler import console
from device_profiler.checks import count, output_file
from tfwidth.errors import ArgumentParser, UsageError, run_cli
from tfwidth.space import GraphCost, SearchSpace, add_space_options, space_from_args

FORMATS = ("fp32", "int8")


# ---- template ---------------------------------------------------------------------------------------------------
def template_model(space: SearchSpace, seed: int = 0):
    """The architecture's plain model at max widths with random, non-trivial BatchNorm and classifier bias.

    Zero biases would be dropped by the converter and identical constants merged into one buffer; random statistics
    give every folded bias its own non-zero values (and a realistic graph to time).
    """
    import tf_keras as keras
    keras.utils.set_random_seed(seed)
    return randomise_statistics(space.architecture.build(space, space.max_widths), seed)


def sliced_model(max_model, space: SearchSpace, widths):
    """The plain model at `widths` whose weights are the first channels of `max_model`'s (the slimmable convention)."""
    from tfwidth.arch.slim import corner
    small = space.architecture.build(space, widths)
    for layer in small.layers:
        big = max_model.get_layer(layer.name).get_weights()
        layer.set_weights([corner(w, s.shape) for w, s in zip(big, layer.get_weights())])
    return small


def convert(model, fmt: str = "fp32", seed: int = 0, calibration_batches: int = 32) -> bytes:
    """The template's conversion (tfwidth.convert.convert), int8 calibrated on ``calibration_batches`` random images:
    a template's weights are random too, only its graph and shapes are timed."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rep = None
    if fmt == "int8":
        rng = np.random.default_rng(seed)
        rep = np.concatenate([rng.normal(size=(1,) + tuple(model.input_shape[1:])) for _ in range(calibration_batches)])
    return convert_model(model, fmt, representative=rep)


def _schema():
    from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def build_manifest(model_obj, space: SearchSpace, fmt: str) -> dict:
    """Which tensors (and which axis) each width variable cuts, found by following the graph's data flow."""
    S = _schema()
    ops = S.BuiltinOperator
    # output-channel axis and input-channel axis of each weight layout (TFLite: OHWI, 1HWO, [out, in])
    weight_axes = {ops.CONV_2D: (0, 3), ops.DEPTHWISE_CONV_2D: (3, None), ops.FULLY_CONNECTED: (0, 1)}
    graph = model_obj.subgraphs[0]
    tensors = graph.tensors
    layer_var = space.architecture.layer_variables(space)
    name = lambda t: tensors[t].name.decode()  # noqa: E731
    shape = lambda t: [int(s) for s in tensors[t].shape]  # noqa: E731
    cuts: dict[tuple, int] = {}  # (tensor, axis) -> variable
    roles: dict[int, str] = {}
    chan: dict[int, int | None] = {}  # activation tensor -> variable of its channel (last) axis
    seen_layers = set()

    def cut(t, axis, var):
        if cuts.setdefault((t, axis), var) != var:
            raise UsageError(f"tensor {name(t)!r} axis {axis} would be cut by two width variables ({cuts[(t, axis)]} "
                             f"and {var}); the template shares it between layers: run unshare_constants first")

    for op in graph.operators:
        oc = model_obj.operatorCodes[op.opcodeIndex]
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        ins = [int(i) for i in op.inputs]
        outs = [int(o) for o in op.outputs]
        in_var = chan.get(ins[0]) if ins else None
        if code in weight_axes:
            w = ins[1]
            tokens = set(re.split(r"[;/]", name(w)))
            layers = [n for n in layer_var if n in tokens]
            if len(layers) != 1:
                raise UsageError(f"cannot tell which layer the weight tensor {name(w)!r} belongs to (matches "
                                 f"{layers}); the template must come from its architecture's plain model "
                                 f"({space.arch}: tfwidth.arch)")
            layer = layers[0]
            seen_layers.add(layer)
            out_var = in_var if layer_var[layer] == "follow" else layer_var[layer]
            out_axis, in_axis = weight_axes[code]
            if out_var is not None:
                cut(w, out_axis, out_var)
            if in_axis is not None and in_var is not None:
                cut(w, in_axis, in_var)
            roles[w] = "weight"
            if len(ins) > 2 and ins[2] >= 0 and out_var is not None:
                cut(ins[2], 0, out_var)
                roles[ins[2]] = "bias"
        else:
            # element-wise, pooling, (de)quantize: the channel axis passes through unchanged
            out_var = in_var if ins and all(shape(o)[-1:] == shape(ins[0])[-1:] for o in outs) else None
        for o in outs:
            chan[o] = out_var
            if out_var is not None:
                cut(o, len(shape(o)) - 1, out_var)
                roles[o] = "activation"
    missing = sorted(set(layer_var) - seen_layers)
    if missing:
        raise UsageError(f"the converted template has no op for layers {missing}; the template must come from its "
                         f"architecture's plain model ({space.arch}: tfwidth.arch)")
    variables = [{"name": n, "max": m, "cuts": []} for n, m in zip(space.layer_names, space.max_widths)]
    described = {}
    for (t, axis), var in sorted(cuts.items()):
        sh = shape(t)
        if sh[axis] != space.max_widths[var]:
            raise UsageError(f"template tensor {name(t)!r} {sh} axis {axis} should be {space.layer_names[var]}'s max "
                             f"width {space.max_widths[var]}; the template does not match the space")
        q = tensors[t].quantization
        per_channel = q is not None and q.scale is not None and len(q.scale) > 1 and int(q.quantizedDimension) == axis
        variables[var]["cuts"].append({"tensor": t, "name": name(t), "axis": axis, "role": roles.get(t, "activation"),
                                       "quant": bool(per_channel)})
        described[str(t)] = {"name": name(t), "shape": sh}
    return {"kind": "template", "space_hash": space.space_hash, "space": space.to_json(), "format": fmt,
            "variables": variables, "tensors": described}


class _AlignedBuilder:
    """flatbuffers.Builder whose byte vectors (TFLite buffers) start on 16 bytes, as the converter writes them."""

    def __new__(cls, size):
        import flatbuffers

        class B(flatbuffers.Builder):
            def CreateNumpyVector(self, x):
                if x.dtype != np.uint8:
                    return super().CreateNumpyVector(x)
                self.StartVector(1, len(x), 16)
                self.head = self.head - len(x)
                self.Bytes[self.head:self.head + len(x)] = x.tobytes()
                self.vectorNumElems = len(x)
                return self.EndVector()
        return B(size)


def unshare_constants(tflite: bytes) -> bytes:
    """Give every constant operand of every op its own tensor and buffer.

    The converter merges equal constants (e.g. the identical folded biases of identity BatchNorms become one
    "arith.constant" tensor used by many ops); ops of different width variables must be able to cut them apart."""
    import copy
    S = _schema()
    model = S.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    graph = model.subgraphs[0]
    has_data = lambda t: t.buffer and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)  # noqa: E731
    seen_tensors, seen_buffers, changed = set(), set(), False
    for op in graph.operators:
        for k, ti in enumerate(op.inputs):
            if ti < 0 or not has_data(graph.tensors[ti]):
                continue
            if ti in seen_tensors:
                dup = copy.deepcopy(graph.tensors[ti])
                dup.name = graph.tensors[ti].name + f";copy{len(graph.tensors)}".encode()
                graph.tensors.append(dup)
                op.inputs[k] = ti = len(graph.tensors) - 1
                changed = True
            seen_tensors.add(ti)
            t = graph.tensors[ti]
            if t.buffer in seen_buffers:
                buf = S.BufferT()
                buf.data = np.array(model.buffers[t.buffer].data, dtype=np.uint8)
                model.buffers.append(buf)
                t.buffer = len(model.buffers) - 1
                changed = True
            seen_buffers.add(t.buffer)
    if not changed:
        return tflite
    for b in model.buffers:  # np.uint8 data packs as one block copy instead of a per-byte loop
        if b.data is not None:
            b.data = np.asarray(b.data, dtype=np.uint8)
    builder = _AlignedBuilder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def make_template(space: SearchSpace, fmt: str = "fp32", seed: int = 0, model=None) -> tuple[bytes, dict]:
    """Convert the max-width model once; return the .tflite bytes and the manifest the device needs."""
    from device_profiler.errors import UsageError as DeviceUsageError
    from device_profiler.variants import VariantMaker
    model = model if model is not None else template_model(space, seed)
    tflite = unshare_constants(convert(model, fmt, seed))
    manifest = build_manifest(_schema().ModelT.InitFromPackedBuf(bytearray(tflite), 0), space, fmt)
    manifest["tflite_sha256"] = hashlib.sha256(tflite).hexdigest()
    manifest["seed"] = seed
    try:  # the device's own load-time checks, run here where the error is fixable
        VariantMaker(tflite, manifest)
    except DeviceUsageError as e:
        raise UsageError(str(e)) from None
    return tflite, manifest


# ---- plans ------------------------------------------------------------------------------------------------------
def biased_configs(space: SearchSpace, count: int, rng: np.random.Generator, bands=None) -> list[tuple]:
    """Each next configuration covers the least-measured latency-table entries (the terms of the space's
    architecture, e.g. MobileNetV1's stem, block pairs and head).

    Counts are integers, so noise below 1/(terms+1) per term only ever breaks ties, and breaks them at random.
    ``bands`` (one (centre, half-width) per configuration, in level fractions 0 = narrowest .. 1 = widest): each
    layer's level is kept within that band (a level outside costs 1e3 per level fraction beyond it, so a layer whose
    levels all lie outside takes the nearest)."""
    k, edges = space.num_choices, space.edges
    unary = [np.zeros(n) for n in k]
    pairwise = [np.zeros((k[a], k[b])) for a, b in edges]
    # each term's count sits on its variable (unary) or on its edge (pairwise)
    where = [(unary[t.variables[0]], t.variables) if len(t.variables) == 1 else
             (pairwise[edges.index(t.variables)], t.variables) for t in space.architecture.latency_terms(space)]
    eps = 1.0 / (2 * len(k) + 2)
    pos = [np.linspace(0.0, 1.0, n) if n > 1 else np.full(1, 0.5) for n in k]
    out = []
    for j in range(count):
        counts = GraphCost(tuple(unary), tuple(pairwise), edges)
        if bands is not None:
            t, h = bands[j]
            counts = counts + GraphCost(tuple(1e3 * np.maximum(np.abs(x - t) - h, 0.0) for x in pos),
                                        tuple(np.zeros_like(p) for p in pairwise), edges)
        noise = GraphCost(tuple(rng.uniform(0, eps, n) for n in k),
                          tuple(rng.uniform(0, eps, p.shape) for p in pairwise), edges)
        idx = mrf.min_total(mrf.combine([(1.0, counts), (1.0, noise)]))[0]
        for table, variables in where:
            table[tuple(idx[v] for v in variables)] += 1
        out.append(space.to_widths(idx))
    return out


# Band half-widths of stratified plans, in level fractions: the narrow bands put whole networks at every point of the
# latency range (the narrowest and widest networks are where targets and baselines live, and a table fitted on mixed
# configurations misjudged them: docs/benchmarks.md, "Figures behind the fit's defaults"); the wide ones (up to all
# levels) cover the table
# entries that pair a narrow layer with a wide one, which random configurations use often.
BAND = (0.1, 1.0)


def stratified_configs(space: SearchSpace, count: int, rng: np.random.Generator) -> list[tuple]:
    """``count`` configurations spread evenly over the range from the narrowest to the widest network: the j-th of
    a random order sits at level fraction (j + U) / count, with every layer's level within a band of random
    half-width (BAND) around it, and among those the least-measured table entries (``biased_configs``)."""
    centres = (rng.permutation(count) + rng.uniform(0.0, 1.0, count)) / count
    halves = rng.uniform(*BAND, count)
    return biased_configs(space, count, rng, bands=list(zip(centres, halves)))


def random_configs(space: SearchSpace, count: int, rng: np.random.Generator) -> list[tuple]:
    """``count`` configurations drawn uniformly per layer: validation plans, unbiased by the fit's sampling."""
    return [space.random_widths(rng) for _ in range(count)]


PLAN_KINDS = {"stratified": stratified_configs, "biased": biased_configs, "random": random_configs}


def write_template(space: SearchSpace, output, fmt: str = "fp32", seed: int = 0) -> tuple[bytes, dict]:
    """The template stage: make_template's .tflite written to ``output`` and its manifest beside it (same name,
    .json), both atomically and the manifest last: it records the .tflite's sha256, so a run killed in between
    leaves a mismatch the device detects instead of a template it would cut wrongly. Returns (tflite, manifest)."""
    output = Path(output)
    tflite, manifest = make_template(space, fmt, seed)
    atomic_write_bytes(output, tflite)
    write_json(output.with_suffix(".json"), manifest)
    return tflite, manifest


def make_plan(space: SearchSpace, count: int, kind: str = "stratified", seed: int = 0, reference=None,
              ladder: bool = True) -> dict:
    """A plan: ``count`` configurations of ``kind`` (PLAN_KINDS), after the uniform ladder (space.ladder(), every
    width level's uniform network) unless ``ladder`` is False; configurations repeated are left out."""
    if count < 1:
        raise UsageError(f"--count must be >= 1, got {count}")
    if kind not in PLAN_KINDS:
        raise UsageError(f"unknown plan kind {kind!r}; choose one of {', '.join(PLAN_KINDS)}")
    rng = np.random.default_rng(seed)
    configs = list(space.ladder()) if ladder else []
    seen = set(configs)
    for c in PLAN_KINDS[kind](space, count, rng):
        if c not in seen:
            seen.add(c)
            configs.append(c)
    reference = space.validate(reference if reference is not None else space.uniform(1.0), "reference")
    return {"kind": "plan", "space_hash": space.space_hash, "space": space.to_json(), "plan_kind": kind,
            "seed": seed, "ladder": bool(ladder), "reference": list(reference), "configs": [list(c) for c in configs]}


def load_plan(path, space: SearchSpace | None = None) -> dict:
    """The plan at ``path`` (a UsageError if it is not one, or, given ``space``, is of another space)."""
    d = read_json(path, "plan")
    if d.get("kind") != "plan":
        raise UsageError(f"{path} is not a plan (kind {d.get('kind')!r}); make one with tfwidth.profile plan")
    if space is not None:
        check_space(d, space, f"plan {path}")
    return d


# ---- CLI --------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.profile", description=(
        "Prepare on-device latency profiling: the max-width .tflite template the device cuts every configuration "
        "from, and the plan of configurations it times (then run `python -m device_profiler` on the device)."))
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("template", help="convert the space's max-width network once, with its manifest",
                       description="Convert the max-width network of the space to .tflite (once) and write "
                                   "beside it NAME.json, the manifest of which tensors each width variable cuts.")
    add_space_options(t, required=True)
    t.add_argument("-o", "--output", required=True, type=output_file, help="template .tflite to write (manifest: same name, .json)")
    t.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="none: fp32 (default); int8: full-integer with random-input calibration (float in/out)")
    t.add_argument("--seed", type=count(0), default=0, help="seed of the random weights and BatchNorm statistics")
    q = sub.add_parser("plan", help="choose the configurations the device will time",
                       description="Write plan.json: configurations to time on the device and a reference "
                                   "configuration re-timed now and then to track drift.")
    add_space_options(q, required=True)
    q.add_argument("--count", type=count(1, 10**6), required=True, help="number of configurations")
    q.add_argument("--kind", choices=tuple(PLAN_KINDS), default="stratified",
                   help="stratified (default): configurations spread evenly from the narrowest to the widest "
                        "network, each covering the least-measured latency-table entries within its band of "
                        "levels; biased: the least-measured entries anywhere; random: uniform per layer "
                        "(validation and test sets)")
    q.add_argument("--no-ladder", action="store_true",
                   help="leave out the uniform network of every width level (timed first by default: targets and "
                        "baselines are uniform networks, and the fit reports them separately)")
    q.add_argument("--seed", type=count(0), default=0)
    q.add_argument("--reference", default="1.0",
                   help="reference configuration: a uniform multiplier (default 1.0) or comma-separated widths")
    q.add_argument("-o", "--output", required=True, type=output_file, help="plan.json to write")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    space = space_from_args(a)
    if a.cmd == "template":
        out = Path(a.output)
        if out.suffix != ".tflite":
            raise UsageError(f"template output {out} should end in .tflite (the manifest goes beside it as .json)")
        if out.with_suffix(".json").is_dir():
            raise UsageError(f"the manifest {out.with_suffix('.json')} would overwrite a directory; choose another "
                             f"-o/--output")
        fmt = "int8" if a.quantize == "int8" else "fp32"
        print(f"converting the max-width model ({space.name}, {space.resolution}px, {fmt}); this takes a while...",
              file=sys.stderr)
        tflite, manifest = write_template(space, out, fmt, a.seed)
        n = sum(len(v["cuts"]) for v in manifest["variables"])
        print(f"{fmt} template, {n} cut tensor axes: " + console.wrote([out, out.with_suffix('.json')],
                                                                      time.perf_counter() - t0))
    else:
        try:
            mult = None if "," in a.reference else float(a.reference)
            if mult is not None and not 0 < mult < 100:  # NaN, inf, 0, negative
                raise ValueError
            reference = [int(w) for w in a.reference.split(",")] if mult is None else space.uniform(mult)
        except ValueError:
            raise UsageError(f"--reference {a.reference!r} is neither a multiplier nor comma-separated widths; "
                             f"e.g. 1.0 or {','.join(map(str, space.uniform(1.0)))}") from None
        plan = make_plan(space, a.count, a.kind, a.seed, reference, ladder=not a.no_ladder)
        write_json(a.output, plan, indent=None)
        n = len(plan["configs"])
        print(f"{n} configurations ({'the uniform ladder and ' if plan['ladder'] else ''}{a.kind}), reference "
              f"{plan['reference']}: " + console.wrote([a.output], time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
