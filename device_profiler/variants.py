"""Cut any width configuration out of a max-width .tflite template by patching a copy of its bytes.

The converter costs seconds per model; this costs milliseconds. Every tensor a width variable touches (weights,
biases, int8 per-channel scales/zero points, activation shapes) is listed in the template's manifest
(template.json, written on the host by ``tfwidth.profile template``) as (tensor index, axis, variable). A variant
keeps the first ``width`` channels along each cut axis. Vectors only ever *shrink*, so shapes, signatures and
quantization vectors are rewritten where they lie with a lower length prefix. Buffer data is packed tight (the
converter's layout puts it in one region; only the few offsets before that region are rewritten), so a variant is
as small as the model it stands for and costs one copy of it; layouts the compact writer does not recognise fall
back to patching a full-size copy in place. No FlatBuffers builder and no TFLite schema module: only the handful of
field slots read below.

Only numpy and flatbuffers: this runs on the device, which has no TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Sequence

import numpy as np
from flatbuffers import encode
from flatbuffers import number_types as N
from flatbuffers.table import Table

from device_profiler.errors import UsageError

# Field slots of the TFLite schema (tensorflow/lite/schema/schema.fbs) that the patcher reads.
_MODEL_SUBGRAPHS, _MODEL_BUFFERS = 2, 4
_SUBGRAPH_TENSORS, _SUBGRAPH_OPERATORS = 0, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANT, _TENSOR_SIGNATURE = 0, 1, 2, 3, 4, 7
_QUANT_SCALE, _QUANT_ZERO_POINT, _QUANT_DIMENSION = 2, 3, 6
_BUFFER_DATA, _BUFFER_OFFSET = 0, 1
# TensorType enum -> numpy dtype, for the types a conv/FC template holds.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 7: np.int16, 9: np.int8}


def _slot(t: Table, slot: int) -> int:
    return t.Offset(4 + 2 * slot)


def _scalar(t: Table, slot: int, flags, default):
    o = _slot(t, slot)
    return t.Get(flags, t.Pos + o) if o else default


def _vector(t: Table, slot: int):
    """(position of the first element, length) of a vector field, or (None, 0) when absent."""
    o = _slot(t, slot)
    return (t.Vector(o), t.VectorLen(o)) if o else (None, 0)


def _tables(t: Table, slot: int) -> list:
    start, n = _vector(t, slot)
    return [Table(t.Bytes, t.Indirect(start + 4 * i)) for i in range(n)]


def _ints(buf, start, n, dtype) -> list:
    return [] if start is None else np.frombuffer(buf, dtype, n, start).tolist()


def read_tensors(model: bytes) -> tuple[list[dict], list[dict]]:
    """Parse what the patcher needs from the first subgraph: per tensor its vectors' positions; per buffer its data."""
    try:
        if len(model) < 8 or model[4:8] != b"TFL3":
            raise ValueError("no TFL3 file identifier")
        root = Table(model, encode.Get(N.UOffsetTFlags.packer_type, model, 0))
        buffers = []
        for b in _tables(root, _MODEL_BUFFERS):
            if _scalar(b, _BUFFER_OFFSET, N.Uint64Flags, 0) > 1:
                raise ValueError("buffers stored outside the flatbuffer (models > 2 GB) are not supported")
            pos, n = _vector(b, _BUFFER_DATA)
            buffers.append({"pos": pos, "len": n, "table": b.Pos})
        subgraphs = _tables(root, _MODEL_SUBGRAPHS)
        if not subgraphs:
            raise ValueError("no subgraph")
        tensors = []
        for t in _tables(subgraphs[0], _SUBGRAPH_TENSORS):
            shape_pos, rank = _vector(t, _TENSOR_SHAPE)
            sig_pos, sig_len = _vector(t, _TENSOR_SIGNATURE)
            name_off = _slot(t, _TENSOR_NAME)
            d = {"name": t.String(t.Pos + name_off).decode("utf-8", "replace") if name_off else "",
                 "type": _scalar(t, _TENSOR_TYPE, N.Int8Flags, 0),
                 "buffer": _scalar(t, _TENSOR_BUFFER, N.Uint32Flags, 0),
                 "shape_pos": shape_pos, "shape": _ints(model, shape_pos, rank, "<i4"),
                 "sig_pos": sig_pos, "signature": _ints(model, sig_pos, sig_len, "<i4"),
                 "scale_pos": None, "scale_len": 0, "zp_pos": None, "zp_len": 0, "quant_dim": 0}
            q = _slot(t, _TENSOR_QUANT)
            if q:
                qt = Table(model, t.Indirect(t.Pos + q))
                d["scale_pos"], d["scale_len"] = _vector(qt, _QUANT_SCALE)
                d["zp_pos"], d["zp_len"] = _vector(qt, _QUANT_ZERO_POINT)
                d["quant_dim"] = _scalar(qt, _QUANT_DIMENSION, N.Int32Flags, 0)
            if d["buffer"] >= len(buffers):
                raise ValueError(f"tensor {len(tensors)} names buffer {d['buffer']} of {len(buffers)}")
            tensors.append(d)
        return tensors, buffers
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise UsageError(f"the template is not a readable .tflite file ({e}); copy it again or regenerate it "
                         f"with `python -m tfwidth.profile template`") from None


def manifest_path(template_path) -> str:
    return os.path.splitext(str(template_path))[0] + ".json"


class VariantMaker:
    """Template bytes + manifest -> variant bytes for any widths. Build once, call ``make(widths)`` many times."""

    def __init__(self, template: bytes, manifest: dict):
        self.template = bytes(template)
        self.manifest = manifest
        self.choices = [list(c) for c in manifest["space"]["choices"]]
        self.max_widths = [c[-1] for c in self.choices]
        digest = hashlib.sha256(self.template).hexdigest()
        if manifest.get("tflite_sha256") not in (None, digest):
            raise UsageError("the template .tflite does not match its manifest (sha256 differs): it was corrupted or "
                             "replaced; copy template.tflite and template.json again from the same `tfwidth.profile "
                             "template` run")
        tensors, buffers = read_tensors(self.template)
        self._patches = self._plan(tensors, buffers)
        self._layout = self._compact_layout(tensors, buffers)
        # Fallback for layouts the compact writer does not understand: one working copy patched in place per
        # variant (bytes after a shortened vector are stale but unreferenced; every variant rewrites every cut).
        self._work = bytearray(self.template) if self._layout is None else None

    # ---- load-time checks and the list of patches ----------------------------------------------------------------
    def _plan(self, tensors, buffers) -> list:
        cuts: dict[int, dict[int, int]] = {}
        for var, entries in enumerate(self.manifest["variables"]):
            for e in entries["cuts"]:
                cuts.setdefault(int(e["tensor"]), {})[int(e["axis"])] = var
        patches, owner = [], {}
        for ti, axes in sorted(cuts.items()):
            if ti >= len(tensors):
                raise UsageError(f"template.json cuts tensor {ti} but the template has {len(tensors)} tensors; "
                                 f"the manifest belongs to another template: regenerate both")
            t = tensors[ti]
            want = self.manifest["tensors"].get(str(ti))
            if want is not None and (want["name"] != t["name"] or list(want["shape"]) != t["shape"]):
                raise UsageError(f"template.json describes tensor {ti} as {want['name']!r} {want['shape']} but the "
                                 f"template has {t['name']!r} {t['shape']}; regenerate both with tfwidth.profile")
            for axis, var in axes.items():
                if axis >= len(t["shape"]) or t["shape"][axis] != self.max_widths[var]:
                    raise UsageError(f"template tensor {t['name']!r} {t['shape']} axis {axis} is not the max width "
                                     f"{self.max_widths[var]} of variable {var}; regenerate the template")
            p = {"tensor": ti, "axes": axes, **t}
            buf = buffers[t["buffer"]]
            p["data_pos"] = buf["pos"] if buf["len"] else None
            if p["data_pos"] is not None:
                dtype = np.dtype(_DTYPES.get(t["type"], np.uint8)).newbyteorder("<")
                if t["type"] not in _DTYPES or buf["len"] != dtype.itemsize * int(np.prod(t["shape"])):
                    raise UsageError(f"template tensor {t['name']!r}: buffer of {buf['len']} bytes does not hold "
                                     f"shape {t['shape']} of type {t['type']}; regenerate the template")
                p["dtype"] = dtype
                p["source"] = np.frombuffer(self.template, dtype, int(np.prod(t["shape"])),
                                            p["data_pos"]).reshape(t["shape"])
            p["per_channel"] = p["scale_len"] > 1 and p["quant_dim"] in axes
            patches.append(p)
            key = (tuple(sorted(axes.items())), tuple(t["shape"]))
            for what in ("data_pos", "shape_pos", "sig_pos", "scale_pos", "zp_pos"):
                if p.get(what) is not None:
                    owner.setdefault(p[what], set()).add(key)
        # A vector shared by tensors cut differently (or by an uncut tensor) cannot be patched in place: the host
        # duplicates shared buffers when it writes the template, so this only trips on a foreign template.
        for ti, t in enumerate(tensors):
            if ti in cuts:
                continue
            for pos in (buffers[t["buffer"]]["pos"] if buffers[t["buffer"]]["len"] else None, t["shape_pos"],
                        t["sig_pos"], t["scale_pos"], t["zp_pos"]):
                if pos is not None and pos in owner:
                    owner[pos].add(("uncut", ti))
        shared = [pos for pos, keys in owner.items() if len(keys) > 1]
        if shared:
            raise UsageError(f"the template shares {len(shared)} vectors between tensors cut differently; "
                             f"regenerate it with `python -m tfwidth.profile template` (it duplicates them)")
        return patches

    def check_widths(self, widths: Sequence[int], what: str = "widths") -> list[int]:
        widths = [int(w) for w in widths]
        if len(widths) != len(self.choices):
            raise UsageError(f"{what} has {len(widths)} values but the template has {len(self.choices)} width "
                             f"variables; use a plan made for this template's space")
        for i, (w, ch) in enumerate(zip(widths, self.choices)):
            if w not in ch:
                raise UsageError(f"{what}: variable {i} width {w} is not a choice of the template's space "
                                 f"(choices: {', '.join(map(str, ch))}); use a plan made for this space")
        return widths

    # ---- per variant ----------------------------------------------------------------------------------------------
    def _cut(self, widths):
        """Per variant: {buffer data pos: sliced array} and the small in-place writes (position, bytes)."""
        data, writes = {}, []
        for p in self._patches:
            shape = list(p["shape"])
            for axis, var in p["axes"].items():
                shape[axis] = widths[var]
            if p["data_pos"] is not None:
                data[p["data_pos"]] = p["source"][tuple(slice(0, n) for n in shape)]
            writes.append((p["shape_pos"], np.asarray(shape, "<i4").tobytes()))
            if p["sig_pos"] is not None and len(p["signature"]) == len(shape):
                # Keep the signature's dynamic (-1) dims; cut the rest like the shape.
                sig = [s if s < 0 else shape[a] for a, s in enumerate(p["signature"])]
                writes.append((p["sig_pos"], np.asarray(sig, "<i4").tobytes()))
            if p["per_channel"]:
                # Per-channel scales/zero points are indexed by channel: keeping the first n is a shorter length.
                n = struct.pack("<I", shape[p["quant_dim"]])
                writes.append((p["scale_pos"] - 4, n))
                if p["zp_len"] > 1:
                    writes.append((p["zp_pos"] - 4, n))
        return data, writes

    def make(self, widths: Sequence[int]) -> bytes:
        widths = self.check_widths(widths)
        data, writes = self._cut(widths)
        if self._layout is not None:
            return self._make_compact(data, writes)
        out = self._work
        for pos, src in data.items():
            self._patch_in_place(out, 0, pos, src)
        for pos, b in writes:
            out[pos:pos + len(b)] = b
        return bytes(out)

    # ---- compact output: drop the cut-away bytes instead of carrying the template's full size -------------------
    # The converter lays a model out as [head: Model, buffer tables, signatures][data: buffer vectors][tail: graph].
    # FlatBuffers offsets only point forward, so nothing in the tail points back, and only the head's offsets into
    # the data region (Buffer.data) or across it need rewriting when the data region shrinks. The head's few objects
    # are walked with the schema below; anything unexpected falls back to the full-size in-place output.
    _HEAD_SCHEMA = {  # table -> (number of slots it may have, {slot: (kind, element table)})
        "Model": (8, {1: ("tables", "OperatorCode"), 2: ("tables", "SubGraph"), 3: ("string", None),
                      4: ("tables", "Buffer"), 5: ("scalars", None), 6: ("tables", "Metadata"),
                      7: ("tables", "SignatureDef")}),
        "OperatorCode": (4, {1: ("string", None)}),
        "Buffer": (3, {0: ("scalars", None)}),
        "Metadata": (2, {0: ("string", None)}),
        "SignatureDef": (5, {0: ("tables", "TensorMap"), 1: ("tables", "TensorMap"), 2: ("string", None)}),
        "TensorMap": (2, {0: ("string", None)}),
    }

    def _head_refs(self, start: int):
        """Every offset stored before `start` as (field position, target), or None if the head is not understood."""
        buf, refs, vtables = self.template, [], []
        u32 = lambda pos: struct.unpack_from("<I", buf, pos)[0]  # noqa: E731

        def walk(pos, table):
            if pos >= start:
                return True  # lies after the head: its own offsets point further on, never back
            if table not in self._HEAD_SCHEMA or pos < 8:
                return False
            nslots, fields = self._HEAD_SCHEMA[table]
            vt = pos - struct.unpack_from("<i", buf, pos)[0]
            vtables.append((pos, vt))  # shared vtables may lie far after the table: its soffset moves too
            vt_len = struct.unpack_from("<H", buf, vt)[0]
            if (vt_len - 4) // 2 > nslots:
                return False  # a newer schema with fields we do not know
            for slot, (kind, sub) in fields.items():
                if 4 + 2 * slot >= vt_len:
                    continue
                off = struct.unpack_from("<H", buf, vt + 4 + 2 * slot)[0]
                if not off:
                    continue
                field = pos + off
                target = field + u32(field)
                refs.append((field, target))
                if kind == "tables" and target < start:
                    for i in range(u32(target)):
                        elem = target + 4 + 4 * i
                        refs.append((elem, elem + u32(elem)))
                        if not walk(elem + u32(elem), sub):
                            return False
            return True

        return (refs, vtables) if walk(u32(0), "Model") else None

    def _compact_layout(self, tensors, buffers):
        t = self.template
        # Units that can move: a buffer's data vector, with its Buffer table when the converter put it just before.
        units = []
        for b in buffers:
            if b["pos"] is None:
                continue
            prefix, table = b["pos"] - 4, b["table"]
            vt = table - struct.unpack_from("<i", t, table)[0]
            if (table + 8 == prefix and struct.unpack_from("<HHH", t, vt) == (6, 8, 4)
                    and table + 4 + struct.unpack_from("<I", t, table + 4)[0] == prefix):
                units.append((table, b["pos"] + b["len"], prefix, (table, vt)))
            else:
                units.append((prefix, b["pos"] + b["len"], prefix, None))
        units.sort()
        # The data region: the longest run of units separated by zero padding only.
        runs, run, prev = [], [], None
        for u in units:
            if run and not (0 <= u[0] - prev < 16 and not any(t[prev:u[0]])):
                runs.append(run)
                run = []
            run.append(u)
            prev = u[1]
        if run:
            runs.append(run)
        if not runs:
            return None
        run = max(runs, key=lambda r: r[-1][1] - r[0][0])
        start, end = run[0][0], run[-1][1]
        for tensor in tensors:
            for pos in (tensor["shape_pos"], tensor["sig_pos"], tensor["scale_pos"], tensor["zp_pos"]):
                if pos is not None and start <= pos < end:
                    return None
        found = self._head_refs(start)
        if found is None:
            return None
        refs, vtables = found
        inside = {u[2] for u in run} | {u[3][0] for u in run if u[3]}
        if any(start <= target < end and target not in inside for _, target in refs):
            return None
        if any(start <= vt < end for _, vt in vtables + [u[3] for u in run if u[3]]):
            return None
        return {"start": start, "end": end, "refs": refs, "vtables": [(p, vt) for p, vt in vtables if vt >= end],
                "units": run}

    @staticmethod
    def _patch_in_place(out: bytearray, base: int, pos: int, src) -> None:
        """Shrink the vector at absolute `pos` (held in `out`, which starts at absolute `base`) to `src`."""
        view = np.frombuffer(out, np.uint8)
        np.copyto(view[pos - base:pos - base + src.nbytes].view(src.dtype).reshape(src.shape), src)
        struct.pack_into("<I", out, pos - base - 4, src.nbytes)

    def _make_compact(self, data: dict, writes: list) -> bytes:
        L, t = self._layout, self.template
        mv = memoryview(t)
        start, end = L["start"], L["end"]
        # pass 1: where each unit goes (same position modulo 16, so every alignment inside it holds)
        moved, cursor, placed = {}, start, []
        for ustart, uend, prefix, table in L["units"]:
            src = data.pop(prefix + 4, None)
            n = src.nbytes if src is not None else uend - prefix - 4
            new = cursor + (ustart - cursor) % 16
            moved[ustart] = new
            moved[prefix] = new + prefix - ustart
            placed.append((new - cursor, ustart, prefix, table, src))
            cursor = new + prefix - ustart + 4 + n
        last = cursor
        cursor += (end - cursor) % 16  # the tail keeps its alignment too
        shift = end - cursor
        relocate = lambda x: moved[x] if start <= x < end else x - shift if x >= end else x  # noqa: E731
        # pass 2: the bytes
        pieces = [None]
        for pad, ustart, prefix, table, src in placed:
            if pad:
                pieces.append(bytes(pad))
            if table is not None:
                tpos, vt = table
                new = moved[ustart]
                pieces += [struct.pack("<i", new - relocate(vt)), mv[tpos + 4:prefix]]
            if src is None:
                pieces.append(mv[prefix:prefix + 4 + struct.unpack_from("<I", t, prefix)[0]])
            else:
                pieces += [struct.pack("<I", src.nbytes), np.ascontiguousarray(src)]
        pieces.append(bytes(cursor - last))
        head = bytearray(mv[:start])
        for field, target in L["refs"]:
            struct.pack_into("<I", head, field, relocate(target) - field)
        for pos, vt in L["vtables"]:
            struct.pack_into("<i", head, pos, pos - relocate(vt))
        tail = bytearray(mv[end:])
        for pos, src in data.items():  # cut buffers outside the data region: shrink where they lie
            if pos < start:
                self._patch_in_place(head, 0, pos, src)
            else:
                self._patch_in_place(tail, end, pos, src)
        for pos, b in writes:
            tail[pos - end:pos - end + len(b)] = b
        pieces[0] = head
        pieces.append(tail)
        return b"".join(pieces)


def load(template_path) -> VariantMaker:
    """Read template.tflite and the template.json beside it; every problem is one UsageError line."""
    template_path = str(template_path)
    mpath = manifest_path(template_path)
    for path, what in ((template_path, "template"), (mpath, "template manifest")):
        if not os.path.exists(path):
            raise UsageError(f"{what} {path} does not exist; create it with `python -m tfwidth.profile template "
                             f"--space space.json -o {os.path.splitext(template_path)[0]}.tflite`")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
        if not isinstance(manifest, dict) or manifest.get("kind") != "template":
            raise ValueError("not a template manifest")
        manifest["space"]["choices"], manifest["variables"], manifest["space_hash"], manifest["tensors"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"template manifest {mpath} is unreadable ({e}); regenerate it with tfwidth.profile "
                         f"template") from None
    sha = manifest.get("tflite_sha256")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        # without it a template swapped or cut short under its manifest would be patched as if it matched
        raise UsageError(f"template manifest {mpath} records no sha256 of its .tflite (an older tfwidth made it); "
                         f"regenerate both with `python -m tfwidth.profile template --space space.json -o "
                         f"{template_path}`")
    with open(template_path, "rb") as f:
        data = f.read()
    try:
        return VariantMaker(data, manifest)
    except UsageError as e:
        raise UsageError(f"template {template_path}: {e}") from None
    except Exception as e:  # a .tflite that is no flatbuffer, a manifest with missing or mistyped fields
        raise UsageError(f"template {template_path} or its manifest {mpath} is malformed ({type(e).__name__}: "
                         f"{e}); regenerate both with `python -m tfwidth.profile template`") from None
