"""An ImageNet-style folder (the `folder:PATH` loader's layout) built from an image npz such as CIFAR-10, so that the
path ImageNet users take (decoded image files, the ImageNet-stride preset) can be benchmarked on data that is here.

    python tools/npz_to_folder.py --data cifar10.npz --out cifar10_64 --resolution 64 [--train 21000] [--val 10000]

Writes OUT/train/<class>/<index>.png from the first --train images of x_train and OUT/val/<class>/<index>.png from
the first --val of x_test, each resized to --resolution (bilinear, antialiased, as tfwidth.data resizes) and rounded
to uint8. Class folders: CIFAR-10's names when the npz has its 10 classes (their alphabetical order is the label
order, so labels survive the loader's sorting), else zero-padded label numbers. The folder is built beside OUT and
renamed when complete (a killed run leaves no half folder: run it again); OUT/folder.json records what it was built
from, and a run whose OUT holds the same record does nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402

import _cache  # noqa: E402
from tfwidth.artifacts import read_json, write_json  # noqa: E402

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(n: int) -> list[str]:
    """Folder names whose sorted order is the label order."""
    return list(CIFAR10) if n == len(CIFAR10) else [f"{k:0{len(str(n - 1))}d}" for k in range(n)]


def write_split(x: np.ndarray, y: np.ndarray, out: Path, names: list[str], resolution: int, desc: str,
                batch: int = 256) -> None:
    import tensorflow as tf
    from tqdm import tqdm
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(x) - 1, 1)))
    with tqdm(total=len(x), desc=desc, unit="img", file=sys.stderr) as bar:
        for i in range(0, len(x), batch):
            xb = tf.constant(x[i:i + batch])
            if tuple(x.shape[1:3]) != (resolution, resolution):
                xb = tf.image.resize(tf.cast(xb, tf.float32), (resolution, resolution), method="bilinear",
                                     antialias=True)
                xb = tf.cast(tf.clip_by_value(tf.round(xb), 0, 255), tf.uint8)
            for j, img in enumerate(xb):
                k = i + j
                (out / names[int(y[k])] / f"{k:0{width}d}.png").write_bytes(tf.io.encode_png(img).numpy())
            bar.update(len(xb))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="npz with x_train, y_train, x_test, y_test (uint8 images NHWC)")
    p.add_argument("--out", required=True, help="the folder to build (must not exist, or hold this same build)")
    p.add_argument("--resolution", type=int, default=64, help="side of the written images (default 64)")
    p.add_argument("--train", type=int, help="the first N training images (default all)")
    p.add_argument("--val", type=int, help="the first N test images, as val/ (default all)")
    a = p.parse_args(argv)
    src, out = Path(a.data), Path(a.out)
    if not src.is_file():
        _cache.usage_error(f"--data {src}: no such file; give an npz with x_train, y_train, x_test, y_test")
    if a.resolution < 8:
        _cache.usage_error(f"--resolution {a.resolution}: give a side of at least 8 pixels")
    try:
        z = np.load(src, allow_pickle=False)
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except Exception as e:  # not a zip, a missing array, object arrays: all mean it is not the input needed
        _cache.usage_error(f"--data {src}: cannot read x_train, y_train, x_test, y_test from it ({e})")
    for k in ("x_train", "x_test"):
        if arrays[k].dtype != np.uint8 or arrays[k].ndim != 4 or arrays[k].shape[-1] not in (1, 3):
            _cache.usage_error(f"--data {src}: {k} is {arrays[k].dtype} {arrays[k].shape}; it must hold uint8 images "
                               f"N x H x W x 1 or 3")
    counts = {}
    for flag, key, v in (("--train", "y_train", a.train), ("--val", "y_test", a.val)):
        n = len(arrays[key])
        if v is not None and not 1 <= v <= n:
            _cache.usage_error(f"{flag} {v}: the npz has {n} images there; give 1..{n}")
        counts[key] = n if v is None else v
    classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    record = {"source": src.name, "sha256": _cache.file_digest(src), "resolution": a.resolution,
              "train": counts["y_train"], "val": counts["y_test"], "classes": class_names(classes)}
    if out.exists():
        if (out / "folder.json").exists() and read_json(out / "folder.json") == record:
            print(f"{out} already holds this build ({record['train']} train, {record['val']} val images)")
            return 0
        _cache.usage_error(f"--out {out} exists and is not this build; remove it or give another --out")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    names = record["classes"]
    write_split(arrays["x_train"][:counts["y_train"]], arrays["y_train"], tmp / "train", names, a.resolution, "train")
    write_split(arrays["x_test"][:counts["y_test"]], arrays["y_test"], tmp / "val", names, a.resolution, "val")
    write_json(tmp / "folder.json", record)
    os.replace(tmp, out)
    print(f"wrote {out}: {record['train']} train and {record['val']} val images, {classes} classes, "
          f"{a.resolution} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
