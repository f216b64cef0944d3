"""How good are the solver's costs? The probe of the trained supernet against the training-time statistics.

    python tools/bench_probe.py --work bench_e2e [--configs 200]     (after tools/bench_e2e.py for seeds 0 and 1)

For every seed's OWS supernet in WORK (tools/bench_e2e.py, which probed it on the first 512 images of its validation
split, the --val-images training images after --train-limit):
  * reliability: the correlation between two seeds' per-(layer, width) costs, probe view vs the training statistics'
    running view (same regression estimator). Costs that measure the widths, not noise, agree across seeds;
  * validity: ``--configs`` fresh random configurations (another seed than the probe's) measured on the probe's
    images and on 512 other held-out images; the correlation of each model's prediction with the measured loss
    increase (training statistics; probe with the additive regression, pinned at the max network as before or
    with the free constant that is the default now; probe with the pairwise estimator);
  * the solver's exact answer for each benchmark target under each probe model: predicted against measured loss
    increase, beside the uniform network, on the probe's images, 512 other held-out ones, and the next 3,968 of
    the validation split (never the test images: this benchmark informs decisions).
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


ANSWERS = ("probe pinned", "probe", "probe pairwise")  # the models whose exact answers are measured


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench_e2e", help="tools/bench_e2e.py's work directory")
    p.add_argument("--data", required=True, help="the data bench_e2e was run on (its --data)")
    p.add_argument("--preset", default="mobilenet_v1_cifar", help="as bench_e2e was run")
    p.add_argument("--resolution", type=int, help="as bench_e2e was run")
    p.add_argument("--classes", type=int, default=10, help="as bench_e2e was run")
    p.add_argument("--train-limit", type=int, default=16000, help="as bench_e2e was run")
    p.add_argument("--val-images", type=int, default=5000, help="as bench_e2e was run: the probe's images are the first "
                   "512 of the N training images after --train-limit")
    p.add_argument("--configs", type=int, default=200, help="fresh configurations measured per seed")
    p.add_argument("--probe-configs", type=int, default=500, help="as bench_e2e's --probe-configs")
    a = p.parse_args(argv)

    from bench_e2e import bench_space, ensure_probe, load_bench_data
    from tfwidth import probe
    from tfwidth.training import load_supernet
    from tfwidth.latency import LatencyTable
    from tfwidth.solve import solve
    from tfwidth.stats import acc_chain
    from tfwidth.stats import WidthStats, regression_costs
    space = bench_space(a)
    data = load_bench_data(argparse.Namespace(**vars(a), batch_size=128, eval_limit=1, seed=0), space)
    work = Path(a.work)
    seeds = sorted(int(d.name[4:]) for d in work.glob("seed*") if (d / "run_ows" / "ckpt").exists())
    if not seeds:
        print(f"no trained OWS supernet under {work}; run tools/bench_e2e.py first", file=sys.stderr)
        return 2
    stats, models = {}, {}
    for s in seeds:  # probed as tools/bench_e2e.py probes (and stored for it), if it has not been yet
        run = work / f"seed{s}" / "run_ows"
        stats[s], models[s] = WidthStats.load(run / "stats.json", space), load_supernet(run, space)
        ensure_probe(run, models[s], stats[s], argparse.Namespace(probe_configs=a.probe_configs, seed=s), data)
    # (view, estimator): the training statistics' regression (the baseline), the probe's regression, and the probe
    # with the adjacent-shape terms (tfwidth/stats.py, estimator "pairwise")
    # "probe pinned": the probe's regression as it was before the free constant (the max network pinned at 0, no
    # least step; tfwidth/stats.py "Intercept"), the baseline for what the constant changes
    views = {"training statistics": lambda st: st.costs("running", "auto"),
             "probe pinned": lambda st: regression_costs(space, *st.normal_equations("probe"), intercept=False,
                                                         min_step=0.0),
             "probe": lambda st: st.costs("probe", "regression"),
             "probe pairwise": lambda st: st.costs("probe", "pairwise")}
    costs = {s: {k: v(stats[s]) for k, v in views.items()} for s in seeds}

    def predict(c, choices):
        acc = acc_chain(space, c)
        return -np.array([acc.total(tuple(int(v) for v in x)) for x in choices])

    # The fits leave out their constant (tfwidth/stats.py, "Intercept"): an absolute prediction adds the mean
    # residual on the probe's own measurements.
    offset = {s: {k: float(np.mean(stats[s].probe_delta - predict(costs[s][k], stats[s].probe_choices)))
                  if k != "probe pinned" else 0.0 for k in ANSWERS} for s in seeds}

    for s in seeds:
        i = stats[s].probe_info
        print(f"probe cost, seed {s}: {i['seconds'] / i['configs']:.3f} s per configuration ({i['configs']} "
              f"configurations on {i['images']} images: {i['seconds']:.0f} s)")
    print("reliability: correlation of two seeds' per-layer costs (all layers and widths)")
    for i, s in enumerate(seeds):
        for t in seeds[i + 1:]:
            r = {k: float(np.corrcoef(np.concatenate(costs[s][k]), np.concatenate(costs[t][k]))[0, 1])
                 for k in ("training statistics", "probe pinned", "probe")}
            print(f"  seeds {s} and {t}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()))

    held = data.holdout_batches()  # 128-image batches
    sets = {"the probe's images": held[:4], "other held-out images": held[4:8],
            "the rest of the validation split": held[8:40]}
    print(f"validity: correlation of each model's prediction with the measured loss increase of {a.configs} fresh "
          f"random configurations")
    for s in seeds:
        choices = probe.draw_configs(space, a.configs, 10_000 + s)
        for name in ("the probe's images", "other held-out images"):
            delta, _ = probe.measure(models[s], sets[name], choices)
            r = {k: float(np.corrcoef(predict(costs[s][k], choices), delta)[0, 1]) for k in views}
            base = r["training statistics"]
            print(f"  seed {s}, {name}: " + ", ".join(f"{k} r = {v:.2f}" + (f" ({v / base:.2f}x)" if k != \
                  "training statistics" else "") for k, v in r.items()))

    # The solver picks what its model rates best, so its answers sit where the model errs in their favour. Each
    # model's exact answer for the benchmark's targets (table: the seed's refined table), predicted against measured,
    # beside the uniform network that defines the target; measured also on test images nothing was selected on.
    print("the solver's exact answers: loss increase over the max network, predicted / measured on each image set")
    targets = json.loads((work / "targets.json").read_text())["targets"]
    for s in seeds:
        tpath = work / f"seed{s}" / "table_refined.json"
        table = LatencyTable.load(tpath if tpath.exists() else work / "table.json", space)
        for t in targets:
            rows = {"uniform": space.to_indices(space.uniform(t["mult"]))}
            for k in ANSWERS:
                rows[k] = tuple(int(v) for v in solve(space, costs[s][k], table, t["measured_ms"], "exact").indices)
            choices = np.array(list(rows.values()))
            meas = {name: probe.measure(models[s], b, choices)[0] for name, b in sets.items()}
            for n, (k, idx) in enumerate(rows.items()):
                pred = "" if k == "uniform" else f"predicted {predict(costs[s][k], [idx])[0] + offset[s][k]:.3f}, "
                print(f"  seed {s}, {t['mult']}x {k:16s} {pred}measured " + ", ".join(
                      f"{v[n]:.3f}" for v in meas.values()) + f"  {space.to_widths(idx)}")
    print("  (measured on: " + ", ".join(sets) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
