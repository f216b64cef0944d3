"""Deployment formats of one solved configuration: fp32, int8 (post-training) and QAT, each fine-tuned the same way,
converted, checked in LiteRT and timed on this CPU. Prints each format's .tflite top-1 and latency beside fp32's.

    python tools/bench_export.py --widths widths.json --run RUN_DIR --dataset npz:../shared/data/cifar10.npz \
        --out bench_export [--latency table.json] [--train-limit 16000 --eval-limit 5000]

Bars (issue 7): int8 top-1 within 1.0 point of fp32; QAT within 0.5 point; fp32 .tflite top-1 equal to Keras within
0.1 point with logits within 1e-4.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfwidth.export import main as export  # noqa: E402

FORMATS = ("fp32", "int8", "qat")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", default="bench_export")
    p.add_argument("--latency")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-limit", type=int, default=16000)
    p.add_argument("--eval-limit", type=int, default=5000)
    a = p.parse_args(argv)
    out = Path(a.out)
    reports = {}
    for fmt in FORMATS:
        model = out / f"model_{fmt}.tflite"
        report = model.with_suffix(".report.json")
        if not report.exists():  # resumable: a finished format is not redone
            args = ["--widths", a.widths, "--run", a.run, "--dataset", a.dataset, "--init", "supernet",
                    "--epochs", a.epochs, "--batch-size", a.batch_size, "--train-limit", a.train_limit,
                    "--eval-limit", a.eval_limit, "--format", fmt, "--no-progress", "-o", model]
            args += ["--latency", a.latency] if a.latency else []
            if export([str(x) for x in args]):
                return 1
        reports[fmt] = json.loads(report.read_text())
    base = reports["fp32"]
    print(f"\n{'format':<6} {'tflite top-1':>12} {'vs fp32':>8} {'keras top-1':>11} {'agreement':>24} "
          f"{'measured ms':>11} {'vs fp32':>8} {'KiB':>7}")
    for fmt, r in reports.items():
        ag = r["agreement"]
        agree = (f"max|dlogit| {ag['max_abs_logit_diff']:.1e}" if fmt == "fp32"
                 else f"top-1 agree {100 * ag.get('top1_agreement', float('nan')):.2f}%")
        ms = r["latency"]["measured"]["ms"]["min"]
        print(f"{fmt:<6} {100 * r['tflite']['top1']:>11.2f}% {100 * (r['tflite']['top1'] - base['tflite']['top1']):>+8.2f} "
              f"{100 * r['keras']['top1']:>10.2f}% {agree:>24} {ms:>11.3f} "
              f"{ms / base['latency']['measured']['ms']['min']:>7.2f}x {r['size_bytes'] / 1024:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
