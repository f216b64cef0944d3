"""The price of reproducible training: Grappler's arithmetic optimizer on vs off (tfwidth.training.reproducible_graphs).

    python tools/bench_determinism.py --data cifar10.npz [--pairs 2]

Alternates fresh processes with the optimizer on and off (same weights, same batches): the time of 15 sandwich
steps and of 30 training-mode forward passes (what the probe runs), and whether two "off" processes end with the same
weights (the reason it is off). Only ratios within this run compare.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
import numpy as np
import tfwidth
import tensorflow as tf
import tf_keras as keras
mode, data, out = sys.argv[1:4]
if mode == "off":
    from tfwidth.training import reproducible_graphs
    reproducible_graphs()
from tfwidth.data import load_data
from tfwidth.space import preset
from tfwidth.supernet import Supernet
sp = preset("mobilenet_v1_cifar")
d = load_data("npz:" + data, sp, 64, seed=0, train_limit=960)
m = Supernet(sp, seed=0, sampling="all-layers")
x, _ = next(iter(d.train_epoch(0)))
m(x[:2])
m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
m.fit(d.train_epoch(0).take(2), verbose=0)  # traced and warm
t = time.perf_counter(); m.fit(d.train_epoch(1), verbose=0); train_s = time.perf_counter() - t
f = tf.function(lambda x: m(x, training=True)); f(x)
t = time.perf_counter()
for _ in range(30):
    f(x)
fwd_s = time.perf_counter() - t
np.savez(out, *[v.numpy() for v in m.weights])
print(json.dumps({"mode": mode, "train_s": train_s, "forward_s": fwd_s}))
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CIFAR-10 npz (x_train, y_train, x_test, y_test)")
    p.add_argument("--pairs", type=int, default=2, help="on/off pairs (default 2)")
    p.add_argument("--work", default="bench_determinism", help="work directory (default ./bench_determinism)")
    a = p.parse_args(argv)
    if not Path(a.data).is_file():
        print(f"error: --data {a.data} does not exist; pass the CIFAR-10 npz", file=sys.stderr)
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(a.pairs):
        for mode in ("on", "off"):
            out = work / f"{mode}{k}.npz"
            r = subprocess.run([sys.executable, "-c", CHILD, mode, a.data, str(out)], capture_output=True, text=True,
                               cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
            if r.returncode:
                print(f"error: the {mode} process failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                return 2
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"{mode:>3}: 15 sandwich steps {rows[-1]['train_s']:.2f} s, 30 forward passes "
                  f"{rows[-1]['forward_s']:.2f} s")
    import numpy as np
    for k in range(a.pairs):
        on, off = rows[2 * k], rows[2 * k + 1]
        print(f"pair {k}: off/on sandwich step {off['train_s'] / on['train_s']:.2f}x, forward "
              f"{off['forward_s'] / on['forward_s']:.2f}x")

    def same(x, y):
        zx, zy = np.load(x), np.load(y)
        return all(np.array_equal(zx[f], zy[f]) for f in zx.files)
    if a.pairs >= 2:
        print(f"two 'off' processes: weights {'equal' if same(work / 'off0.npz', work / 'off1.npz') else 'DIFFERENT'}; "
              f"two 'on' processes: {'equal' if same(work / 'on0.npz', work / 'on1.npz') else 'different'}")
    sys.path.insert(0, str(ROOT))
    from tfwidth.artifacts import write_json
    from tfwidth.space import preset
    write_json(work / "report.json", {"kind": "bench_determinism", "space_hash": preset("mobilenet_v1_cifar").space_hash,
                                      "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
