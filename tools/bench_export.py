"""Deployment formats of one solved configuration: fp32, int8 (post-training) and QAT, each fine-tuned the same way,
converted, checked in LiteRT and timed on this CPU. Prints each format's .tflite top-1 and latency beside fp32's.

    python tools/bench_export.py --widths widths.json --run RUN_DIR --dataset npz:cifar10.npz \
        --out bench_export [--latency table.json] [--train-limit 16000 --eval-limit 5000]

Bars (issue 7): int8 top-1 within 1.0 point of fp32; QAT within 0.5 point; fp32 .tflite top-1 equal to Keras within
0.1 point with logits within 1e-4. The table and the bars go to OUT/report.md. A format's export is reused only when
its key (tools/_cache.py: the widths, the run's checkpoint, the dataset, the table, the arguments and the export code)
matches; otherwise it is exported again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import _cache  # noqa: E402
from tfwidth.export import main as export  # noqa: E402

FORMATS = ("fp32", "int8", "qat")
CODE = ("tfwidth/export.py", "tfwidth/convert.py", "tfwidth/data.py", "tfwidth/arch", "tfwidth/supernet.py",
        "tfwidth/latency.py", "tfwidth/train.py", "device_profiler")


def bars(reports: dict) -> list[tuple[str, bool | None, str]]:
    """(bar, pass or None when not measured, the figure) for the formats' reports (tfwidth.export's report.json)."""
    out = []
    base = reports.get("fp32")
    if base:
        d = abs(base["tflite"]["top1"] - base["keras"]["top1"])
        logit = base["agreement"]["max_abs_logit_diff"]
        out.append(("fp32 .tflite top-1 = Keras within 0.1 point, logits within 1e-4", d <= 0.001 and logit <= 1e-4,
                    f"{100 * d:.2f} points, max |dlogit| {logit:.1e}"))
    for fmt, limit in (("int8", 1.0), ("qat", 0.5)):
        r = reports.get(fmt)
        if base is None or r is None:
            out.append((f"{fmt} top-1 within {limit} point of fp32", None, "not measured"))
            continue
        d = 100 * (r["tflite"]["top1"] - base["tflite"]["top1"])
        out.append((f"{fmt} top-1 within {limit} point of fp32", abs(d) <= limit, f"{d:+.2f} points"))
    return out


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
    inputs = {"widths": _cache.file_digest(a.widths), "run": _cache.run_digest(a.run),
              "dataset": _cache.dataset_digest(a.dataset), "latency": _cache.file_digest(a.latency) if a.latency else None}
    code = _cache.code_digest(*CODE)
    for fmt in FORMATS:
        model = out / f"model_{fmt}.tflite"
        report = model.with_suffix(".report.json")
        parts = {"args": {"format": fmt, "epochs": a.epochs, "batch_size": a.batch_size, "train_limit": a.train_limit,
                          "eval_limit": a.eval_limit}, "inputs": inputs, "code": code}
        record = model.with_suffix(".key.json")
        # resumable: a finished format is not redone, unless anything it was computed from changed
        if not (report.exists() and _cache.check(record, parts, f"{fmt} export", leftover=True)):
            args = ["--widths", a.widths, "--run", a.run, "--dataset", a.dataset, "--init", "supernet",
                    "--epochs", a.epochs, "--batch-size", a.batch_size, "--train-limit", a.train_limit,
                    "--eval-limit", a.eval_limit, "--format", fmt, "--no-progress", "-o", model]
            args += ["--latency", a.latency] if a.latency else []
            if export([str(x) for x in args]):
                return 1
            _cache.store(record, parts)
        reports[fmt] = json.loads(report.read_text())
    base = reports["fp32"]
    lines = [f"{'format':<6} {'tflite top-1':>12} {'vs fp32':>8} {'keras top-1':>11} {'agreement':>24} "
             f"{'measured ms':>11} {'vs fp32':>8} {'KiB':>7}"]
    for fmt, r in reports.items():
        ag = r["agreement"]
        agree = (f"max|dlogit| {ag['max_abs_logit_diff']:.1e}" if fmt == "fp32"
                 else f"top-1 agree {100 * ag.get('top1_agreement', float('nan')):.2f}%")
        ms = r["latency"]["measured"]["ms"]["min"]
        lines.append(f"{fmt:<6} {100 * r['tflite']['top1']:>11.2f}% "
                     f"{100 * (r['tflite']['top1'] - base['tflite']['top1']):>+8.2f} "
                     f"{100 * r['keras']['top1']:>10.2f}% {agree:>24} {ms:>11.3f} "
                     f"{ms / base['latency']['measured']['ms']['min']:>7.2f}x {r['size_bytes'] / 1024:>7.0f}")
    lines += ["", "bars:"] + [f"  {'n/a ' if ok is None else 'PASS' if ok else 'FAIL'}  {name}: {val}"
                              for name, ok, val in bars(reports)]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "report.md").write_text(f"# Deployment formats (tools/bench_export.py)\n\n```\n{text}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
