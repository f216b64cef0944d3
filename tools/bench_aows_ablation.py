"""Is AOWS's gain the live probe's? The AOWS supernets trained without it, solved with today's costs.

    python tools/bench_aows_ablation.py --work W [--data cifar10.npz]

After tools/bench_e2e.py for seeds 0 and 1 in W, with each seed's earlier AOWS supernet (marginals from the training
statistics, exploration floor) kept as W/seedN/run_aows_floor. For each seed: ows at the middle (0.75x) target on that
supernet's probe costs (the default estimator, as bench_e2e's ows), on the seed's refined table, evaluated as
bench_e2e evaluates (inherited with BN recalibration; fine-tuned, converted, timed). Prints it beside the seed's ows
(OWS supernet) and aows (live-probe AOWS supernet) rows from W/seedN/configs.json. Results are cached in
W/seedN/ablation.json (one fine-tuning ~2 min), reused only when its key (tools/_cache.py: the supernet's checkpoint,
the refined table, the target, the data, the arguments and the code) matches.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import _cache  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="tools/bench_e2e.py's work directory")
    p.add_argument("--data", required=True, help="the CIFAR-10 npz bench_e2e was run on")
    p.add_argument("--train-limit", type=int, default=16000)
    p.add_argument("--eval-limit", type=int, default=5000)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--calib-batches", type=int, default=20)
    a = p.parse_args(argv)

    from tfwidth.artifacts import read_json, write_json
    from tfwidth.convert import convert, keras_logits, top1
    from tfwidth.data import load_data
    from tfwidth.export import fine_tune
    from tfwidth.host import measure_latency
    from tfwidth.training import load_supernet
    from tfwidth.latency import LatencyTable
    from tfwidth.solve import solve
    from tfwidth.space import preset
    from tfwidth.stats import WidthStats

    work = Path(a.work)
    space = preset("mobilenet_v1_cifar")
    target = json.loads((work / "targets.json").read_text())["targets"][1]
    seeds = sorted(int(d.name[4:]) for d in work.glob("seed*") if (d / "run_aows_floor" / "ckpt").exists())
    if not seeds:
        print(f"no seedN/run_aows_floor under {work}: nothing to compare", file=sys.stderr)
        return 2
    print(f"ows at the {target['mult']}x target ({target['measured_ms']:.3f} ms), top-1 % inherited / fine-tuned "
          f"({a.finetune_epochs} epochs), measured ms")
    diffs = []
    for s in seeds:
        sd = work / f"seed{s}"
        cache = sd / "ablation.json"
        parts = {"args": {k: getattr(a, k) for k in ("train_limit", "eval_limit", "finetune_epochs", "batch_size",
                                                     "calib_batches")} | {"seed": s, "space_hash": space.space_hash,
                                                                          "target_ms": target["measured_ms"]},
                 "inputs": {"run": _cache.run_digest(sd / "run_aows_floor"), "data": _cache.file_digest(a.data),
                            "table": _cache.file_digest(sd / "table_refined.json")},
                 "code": _cache.code_digest("tfwidth/solve.py", "tfwidth/export.py", "tfwidth/stats.py",
                                            "tfwidth/latency.py", "tfwidth/convert.py", "device_profiler")}
        rec = read_json(cache) if cache.exists() and _cache.check(sd / "ablation.key.json", parts, f"seed {s} "
                                                                   "ablation", leftover=True) else None
        if rec is None:
            run = sd / "run_aows_floor"
            data = load_data(f"npz:{a.data}", space, a.batch_size, seed=s, train_limit=a.train_limit,
                             eval_limit=a.eval_limit)
            xe, ye = data.eval_arrays()
            table = LatencyTable.load(sd / "table_refined.json", space)
            w = space.to_widths(solve(space, WidthStats.load(run / "stats.json", space).costs("probe"), table,
                                      target["measured_ms"], "ows").indices)
            t0 = time.time()
            inherited = load_supernet(run, space).evaluate_widths(w, data, calib_batches=a.calib_batches)
            # the export's recipe, as bench_e2e fine-tunes (init supernet: lr 0.01 x batch/64, no warm-up)
            model = fine_tune(space, w, data, run_dir=run, epochs=a.finetune_epochs, calib_batches=a.calib_batches,
                              seed=s, progress=False).model
            rec = {"space_hash": space.space_hash, "seed": s, "widths": list(w), "predicted_ms": table.predict(w), "inherited": inherited,
                   "finetuned": top1(keras_logits(model, xe), ye),
                   "measured_ms": measure_latency(convert(model, "fp32"), runs=20, repeats=5, cpus=(0,))["ms"]["min"],
                   "seconds": time.time() - t0}
            write_json(cache, rec)
            _cache.store(sd / "ablation.key.json", parts)
        rows = {"floor AOWS (no live probe)": rec}
        cfg = json.loads((sd / "configs.json").read_text())["configs"]
        for m, label in (("ows", "OWS"), ("aows", "AOWS, live probe")):
            c = [c for c in cfg if c["method"] == m and c["target_mult"] == target["mult"] and c.get("finetuned_top1")]
            if c:
                rows[label] = {"inherited": c[0]["inherited_top1"], "finetuned": c[0]["finetuned_top1"],
                               "measured_ms": c[0]["measured_ms"]}
        for label, r in rows.items():
            print(f"  seed {s}  {label:28s} {100 * r['inherited']:6.2f} / {100 * r['finetuned']:6.2f}  "
                  f"{r['measured_ms']:.3f} ms")
        if len(rows) == 3:
            f, o, l = (rows[k]["finetuned"] for k in ("floor AOWS (no live probe)", "OWS", "AOWS, live probe"))
            diffs.append((100 * (f - o), 100 * (l - f)))
    if diffs:
        n = len(diffs)
        print(f"fine-tuned, mean over {n} seed(s): floor AOWS - OWS {sum(d[0] for d in diffs) / n:+.2f}, "
              f"live-probe AOWS - floor AOWS {sum(d[1] for d in diffs) / n:+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
