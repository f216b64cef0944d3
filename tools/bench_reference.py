"""Does timing the reference beside each sample (device_profiler --paired-reference) bias the drift correction?

Times, on this CPU (1 thread, pinned), the reference network (uniform 1.0x) and a small one (uniform 0.5x) alone
and with the reference's invokes alternating with theirs, interleaved in rounds so that the machine's drift hits
every condition alike. The paired sample is corrected by ref_level / its paired reference; if the reference's own
timing depends on what it is paired with, that correction scales small and big networks differently.

    python tools/bench_reference.py --template work/template.tflite [--rounds 5 --runs 30]

Prints medians over rounds and the ratios: paired / alone for each network, and the reference's timing beside the
small network / beside itself (1.0 = no bias).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_profiler import runtime as runtimes, timing, variants  # noqa: E402
from tfwidth.space import SearchSpace  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", required=True, help="template.tflite (template.json beside it)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=30, help="timed invokes per measurement (min of them)")
    p.add_argument("--cpus", default="0")
    a = p.parse_args(argv)
    maker = variants.load(a.template)
    space = SearchSpace.from_dict(maker.manifest["space"])
    rt = runtimes.select(None)
    timing.pin([int(c) for c in a.cpus.split(",")])
    rng = np.random.default_rng(0)
    nets = {"reference (1.0x)": list(space.uniform(1.0)), "small (0.5x)": list(space.uniform(0.5))}
    ref = timing.prepare(rt, maker.make(nets["reference (1.0x)"]), 1, rng)
    proto = timing.Protocol(runs=a.runs, threads=1)
    got = {(n, k): [] for n in nets for k in ("alone", "paired", "ref beside")}
    for _ in range(a.rounds):
        for name, w in nets.items():
            content = maker.make(w)
            got[name, "alone"].append(timing.time_model(rt, content, proto, rng)["ms"]["min"])
            r = timing.time_model(rt, content, proto, rng, ref)
            got[name, "paired"].append(r["ms"]["min"])
            got[name, "ref beside"].append(r["ref_ms"]["min"])
    med = {k: float(np.median(v)) for k, v in got.items()}
    print(f"min of {a.runs} invokes, median over {a.rounds} interleaved rounds, 1 thread, cpus {a.cpus}")
    for name in nets:
        print(f"{name:18s} alone {med[name, 'alone']:.4f} ms  paired {med[name, 'paired']:.4f} ms  "
              f"(x{med[name, 'paired'] / med[name, 'alone']:.3f})  reference beside it {med[name, 'ref beside']:.4f} ms")
    small, big = "small (0.5x)", "reference (1.0x)"
    bias = med[small, "ref beside"] / med[big, "ref beside"]
    print(f"reference beside the small network / beside itself: {bias:.3f} (1.0 = no bias); a small sample's "
          f"drift-corrected timing moves by {1 / bias:.3f}x relative to a big one's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
