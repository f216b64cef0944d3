"""How good are the solver's costs? The probe of the trained supernet against the training-time statistics.

    python tools/bench_probe.py --work bench_e2e [--configs 200]     (after tools/bench_e2e.py for seeds 0 and 1)

For every seed's OWS supernet in WORK (tools/bench_e2e.py, which probed it on x_train[L:L+512], L = --train-limit):
  * reliability: the correlation between two seeds' per-(layer, width) costs, probe view vs the training statistics'
    running view (same regression estimator). Costs that measure the widths, not noise, agree across seeds;
  * validity: ``--configs`` fresh random configurations (another seed than the probe's) measured on the probe's
    images and on 512 other held-out images; the correlation of each view's additive prediction with the measured
    loss increase;
  * the solver's answers (WORK/seedN/solved.json): their predicted against their measured loss increase.
Prints each figure beside its baseline (the training statistics) from the same run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import tfwidth  # noqa: E402,F401
from tfwidth.space import preset  # noqa: E402


def additive(costs, choices) -> np.ndarray:
    return np.array([sum(costs[l][c[l]] for l in range(len(c))) for c in choices])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench_e2e", help="tools/bench_e2e.py's work directory")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10.npz"))
    p.add_argument("--train-limit", type=int, default=16000, help="as bench_e2e was run (the probe's images follow)")
    p.add_argument("--configs", type=int, default=200, help="fresh configurations measured per seed")
    p.add_argument("--probe-configs", type=int, default=500, help="as bench_e2e's --probe-configs")
    a = p.parse_args(argv)

    from bench_e2e import ensure_probe
    from tfwidth import probe
    from tfwidth.export import load_supernet
    from tfwidth.stats import WidthStats
    space = preset("mobilenet_v1_cifar")
    work = Path(a.work)
    seeds = sorted(int(d.name[4:]) for d in work.glob("seed*") if (d / "run_ows" / "ckpt").exists())
    if not seeds:
        print(f"no trained OWS supernet under {work}; run tools/bench_e2e.py first", file=sys.stderr)
        return 2
    stats, models = {}, {}
    for s in seeds:  # probed as tools/bench_e2e.py probes (and stored for it), if it has not been yet
        run = work / f"seed{s}" / "run_ows"
        stats[s], models[s] = WidthStats.load(run / "stats.json", space), load_supernet(run, space)
        ensure_probe(run, models[s], stats[s], argparse.Namespace(
            data=a.data, train_limit=a.train_limit, batch_size=128, probe_configs=a.probe_configs, seed=s))
    views = {"probe": "probe", "training statistics": "running"}
    costs = {s: {k: stats[s].costs(v) for k, v in views.items()} for s in seeds}

    print("reliability: correlation of two seeds' costs (all layers and widths)")
    for i, s in enumerate(seeds):
        for t in seeds[i + 1:]:
            r = {k: float(np.corrcoef(np.concatenate(costs[s][k]), np.concatenate(costs[t][k]))[0, 1]) for k in views}
            print(f"  seeds {s} and {t}: probe {r['probe']:.2f}, training statistics {r['training statistics']:.2f}")

    raw = np.load(a.data)
    lo = a.train_limit
    sets = {name: probe.array_batches(raw["x_train"][i:i + 512], raw["y_train"][i:i + 512], 128)
            for name, i in (("the probe's images", lo), ("other held-out images", lo + 512))}
    print(f"validity: correlation of the additive prediction with the measured loss increase of {a.configs} fresh "
          f"random configurations")
    for s in seeds:
        model = models[s]
        choices = probe.draw_configs(space, a.configs, 10_000 + s)
        for name, b in sets.items():
            delta, _ = probe.measure(model, b, choices)
            r = {k: float(np.corrcoef(additive(costs[s][k], choices), delta)[0, 1]) for k in views}
            print(f"  seed {s}, {name}: probe r = {r['probe']:.2f}, training statistics r = "
                  f"{r['training statistics']:.2f} ({r['probe'] / r['training statistics']:.2f}x)")
    # The solver picks what the model rates best, so its answers sit where the model errs in their favour: predicted
    # against measured loss increase of each seed's settled answers (tools/bench_e2e.py's solved.json).
    print("the solver's answers: predicted / measured loss increase over the max network on the probe's images")
    for s in seeds:
        solved = work / f"seed{s}" / "solved.json"
        if not solved.exists():
            continue
        rows = [c for c in json.loads(solved.read_text())["configs"] if c["run"] == "ows" and c["widths"]
                and c["method"] in ("uniform", "greedy", "exact")]
        choices = np.array([space.to_indices(c["widths"]) for c in rows])
        delta, _ = probe.measure(models[s], sets["the probe's images"], choices)
        pred = additive(costs[s]["probe"], choices)
        for c, d, q in zip(rows, delta, pred):
            print(f"  seed {s}, {c['target_mult']}x {c['method']:8s} predicted {q:.3f}, measured {d:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
