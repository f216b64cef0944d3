"""WORK/report.html: what a pipeline's work directory holds, on one self-contained page (images embedded).

    python -m tfwidth.report work            # tfwidth report work; the pipeline writes it at its end

Sections, each from the artefacts it names (a section whose artefacts are missing says so, the rest is shown):
the latency fit (table.json, samples.jsonl, val.jsonl: predicted vs measured, validation figures, the noise floor),
the front of every solver from one supernet (run/stats.json and the table widths.json was solved on, with the target
and the answer marked), the answer's widths per layer against the uniform network of the same latency, the exported
model (model_*.report.json: accuracy, size, measured vs predicted latency) and the stages' wall times
(pipeline.json). Every number sits in an element with an id and its exact value in data-value, so a test (or a
script) can read it back.
"""
from __future__ import annotations

import base64
import html
import sys
from pathlib import Path

from device_profiler.checks import output_file
from tfwidth.artifacts import atomic_write_bytes, figure_png, pyplot, read_json
from tfwidth.errors import ArgumentParser, UsageError, run_cli

PARETO_POINTS = 50  # targets in the front's sweep (as `tfwidth solve --pareto`'s default)


# ---- reading the work directory -------------------------------------------------------------------------------------
def _json(path: Path):
    return read_json(path, path.name) if path.is_file() else None


def _model_report(work: Path) -> Path | None:
    """The export's report: the newest model_*.report.json (one per --format the pipeline ran)."""
    found = sorted(work.glob("model_*.report.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _local(path_text, work: Path) -> Path | None:
    """A path an artefact recorded, or the file of that name in ``work`` when the directory was moved."""
    if not path_text:
        return None
    p = Path(path_text)
    return p if p.is_file() else (work / p.name if (work / p.name).is_file() else None)


# ---- the page's pieces --------------------------------------------------------------------------------------------
def num(id_: str, value, text: str | None = None) -> str:
    """A number of the page: ``<span id=.. data-value=..>`` holding ``text`` (default: the value); None is "n/a"."""
    if value is None:
        return f'<span id="{id_}" data-value="">n/a</span>'
    shown = text if text is not None else (f"{value:.4g}" if isinstance(value, float) else str(value))
    return f'<span id="{id_}" data-value="{html.escape(repr(value) if isinstance(value, float) else str(value))}">' \
           f'{html.escape(shown)}</span>'


def pct(id_: str, value) -> str:
    return num(id_, value, None if value is None else f"{100 * value:.1f}%")


def ms(id_: str, value) -> str:
    return num(id_, value, None if value is None else f"{value:.4g} ms")


def image(id_: str, png: bytes, alt: str) -> str:
    """``png`` embedded as a data URI: the page needs no other file."""
    return (f'<img id="{id_}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')


def missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)}</p>'


def widths_png(names, answer, uniform, answer_label: str, uniform_label: str) -> bytes:
    """Grouped bars per layer: the answer's widths beside the uniform network's."""
    import numpy as np
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 3.8))
    x = np.arange(len(names))
    ax.bar(x - 0.2, answer, 0.4, label=answer_label, color="crimson")
    if uniform is not None:
        ax.bar(x + 0.2, uniform, 0.4, label=uniform_label, color="grey")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("channels")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return figure_png(fig)


# ---- sections -------------------------------------------------------------------------------------------------------
def fit_section(work: Path) -> str:
    from tfwidth.latency import LatencyTable, fit_png, fit_series, load_samples
    table_path = work / "table.json"
    if not table_path.is_file():
        return "<h2>Latency table</h2>" + missing(f"no {table_path.name} yet: the fit has not run")
    table = LatencyTable.load(table_path)
    fit = table.fit
    val, noise, verdict = fit.get("validation") or {}, fit.get("noise") or {}, fit.get("verdict") or {}
    named = [(name, load_samples(work / f, warn=lambda m: None)) for name, f in
             (("train", "samples.jsonl"), ("validation", "val.jsonl")) if (work / f).is_file()]
    series = fit_series(table, named)
    out = ["<h2>Latency table: predicted vs measured</h2>"]
    out.append(image("fit-plot", fit_png(series), "predicted vs measured latency") if series else
               missing("the samples the table was fitted on are not in the work directory"))
    out.append(f"""<table class="figures">
<tr><th>samples fitted</th><td>{num("fit-samples", fit.get("n_samples"))}</td></tr>
<tr><th>validation configurations</th><td>{num("val-n", val.get("n"))}</td></tr>
<tr><th>validation RMSE</th><td>{ms("val-rmse", val.get("rmse_ms"))}
  ({num("val-rmse-x-noise", verdict.get("rmse_x_noise"), None if verdict.get("rmse_x_noise") is None
    else f"{verdict['rmse_x_noise']:.2f}x")} the noise floor)</td></tr>
<tr><th>validation within +-5% / +-10%</th><td>{pct("val-within5", val.get("within_5pct"))} /
  {pct("val-within10", val.get("within_10pct"))}</td></tr>
<tr><th>noise floor: repeats of the same network</th><td>RMSE {ms("noise-rmse", noise.get("repeat_rmse_ms"))},
  median difference {pct("noise-median", noise.get("repeat_rel_diff_median"))}</td></tr>
<tr><th>verdict</th><td>{num("fit-verdict", "too poor to solve on" if verdict.get("poor") else "ok")}</td></tr>
</table>""")
    refined = _json(work / "table_refined.json")
    rec = ((refined or {}).get("fit") or {}).get("refine")
    if rec:
        out.append(f"""<p>Refined on the solver's own answers timed here: {num("refine-rounds", rec.get("rounds"))}
round(s), the answers' largest error {pct("refine-before", rec.get("max_abs_err_before"))} &rarr;
{pct("refine-after", rec.get("max_abs_err_after"))}
({"converged" if rec.get("converged") else "not converged: " + html.escape(str(rec.get("blocked_by", "")))}).</p>""")
    return "\n".join(out)


def solve_sections(work: Path) -> str:
    from tfwidth import solve as solve_mod
    w = _json(work / "widths.json")
    if w is None:
        return "<h2>Widths</h2>" + missing("no widths.json yet: the solve stage has not run")
    stats, table = _local(w.get("stats"), work) or work / "run" / "stats.json", _local(w.get("table"), work)
    rows = w.get("results") or [{k: w.get(k) for k in ("method", "widths", "predicted_ms", "objective")}]
    method = w.get("method") or rows[0].get("method")
    best = next((r for r in rows if r.get("method") == method), rows[0])
    target = w.get("target_ms")
    out = ["<h2>Accuracy against latency: every solver on one supernet</h2>"]
    uniform = next((r for r in rows if r["method"] == "uniform"), None)
    if stats.is_file() and table is not None:
        st, lat, costs = solve_mod.load_inputs(stats, table, w.get("stats_view", "auto"),
                                               w.get("stats_estimator", "auto"))
        front = solve_mod.pareto(st.space, costs, lat, solve_mod.METHODS, PARETO_POINTS, w.get("max_params"))
        out.append(image("pareto-plot", solve_mod.pareto_png(front, solve_mod.METHODS, target, best),
                         "accuracy proxy against predicted latency, per solver"))
        out.append("<p>The objective is minus the supernet's summed loss increases of the widths (higher: more "
                   "accurate); each line sweeps the latency target from the fastest to the slowest network.</p>")
        if uniform is None and best.get("widths"):  # solved with one method: the uniform network of that target
            uniform = solve_mod.describe(st.space, solve_mod.solve(st.space, costs, lat, target, "uniform",
                                                                   w.get("max_params")))
    else:
        out.append(missing("the supernet's statistics or the latency table widths.json names are missing"))
    out.append("""<table class="figures"><tr><th>method</th><th>predicted ms</th><th>measured here ms</th>
<th>objective</th><th>params</th><th>widths</th></tr>""")
    for r in rows:
        m = r.get("method")
        measured = (r.get("verified") or {}).get("measured_ms")
        mark = ' class="answer"' if m == method else ""
        if r.get("widths") is None:
            out.append(f"<tr{mark}><td>{m}</td><td colspan=5>no configuration meets the target</td></tr>")
            continue
        out.append(f"<tr{mark}><td>{m}</td><td>{num(f'pred-{m}', r['predicted_ms'], format(r['predicted_ms'], '.4f'))}"
                   f"</td><td>{num(f'measured-{m}', measured, None if measured is None else format(measured, '.4f'))}</td>"
                   f"<td>{num(f'objective-{m}', r['objective'], format(r['objective'], '.4f'))}</td>"
                   f"<td>{num(f'params-{m}', r.get('params'))}</td><td>{' '.join(map(str, r['widths']))}</td></tr>")
    out.append("</table>")
    out.append(f"<p>Target {ms('target', target)}; the answer ({num('answer-method', method)}) is "
               f"marked.</p>")
    out.append("<h2>Widths per layer: the answer against the uniform network of the same latency</h2>")
    space = st.space if stats.is_file() and table is not None else None
    names = list(space.layer_names) if space is not None else [f"layer {i}" for i in range(len(best["widths"] or []))]
    if best.get("widths") and best.get("predicted_ms") is not None:
        u = uniform.get("widths") if uniform else None
        out.append(image("widths-plot", widths_png(
            names, best["widths"], u, f"{method} (predicted {best['predicted_ms']:.4g} ms)",
            "uniform" + (f" (predicted {uniform['predicted_ms']:.4g} ms)" if u else "")), "widths per layer"))
        out.append(f'<p id="answer-widths" data-value="{" ".join(map(str, best["widths"]))}">answer: '
                   f'{" ".join(map(str, best["widths"]))}</p>')
        if u:
            out.append(f'<p id="uniform-widths" data-value="{" ".join(map(str, u))}">uniform: '
                       f'{" ".join(map(str, u))}</p>')
    else:
        out.append(missing("no configuration meets the target"))
    return "\n".join(out)


def model_section(work: Path) -> str:
    path = _model_report(work)
    if path is None:
        return "<h2>Exported model</h2>" + missing("no model_*.report.json yet: the export has not run")
    r = read_json(path, path.name)
    lat = r.get("latency") or {}
    measured = ((lat.get("measured") or {}).get("ms") or {}).get("min")
    return f"""<h2>Exported model: {html.escape(Path((r.get("outputs") or {}).get("tflite", path.name)).name)}</h2>
<table class="figures">
<tr><th>method / format</th><td>{num("model-method", r.get("method"))} / {num("model-format", r.get("format"))}</td></tr>
<tr><th>top-1 (.tflite, {num("model-eval-images", r.get("eval_images"))} images)</th>
  <td>{pct("model-top1", (r.get("tflite") or {}).get("top1"))} (Keras {pct("model-keras-top1",
  (r.get("keras") or {}).get("top1"))})</td></tr>
<tr><th>size</th><td>{num("model-size", r.get("size_bytes"), f"{r['size_bytes'] / 1024:.1f} KiB"
  if r.get("size_bytes") is not None else None)}</td></tr>
<tr><th>latency here: measured / predicted / target</th><td>{ms("model-measured", measured)} /
  {ms("model-predicted", lat.get("predicted_ms"))} / {ms("model-target", lat.get("target_ms"))}</td></tr>
<tr><th>parameters / MACs</th><td>{num("model-params", r.get("params"))} / {num("model-macs", r.get("macs"))}</td></tr>
</table>"""


def times_section(work: Path) -> str:
    doc = _json(work / "pipeline.json")
    stages = (doc or {}).get("stages") or {}
    timed = [(name, rec.get("seconds")) for name, rec in stages.items() if isinstance(rec, dict)]
    if not timed:
        return "<h2>Stage wall times</h2>" + missing("no pipeline.json: this directory was not made by the pipeline")
    total = sum(s for _, s in timed if s is not None)
    body = "\n".join(f"<tr><td>{html.escape(n)}</td><td>{num(f'seconds-{n}', s, None if s is None else f'{s:.1f} s')}"
                     f"</td></tr>" for n, s in timed)
    return f"""<h2>Stage wall times</h2>
<table class="figures"><tr><th>stage</th><th>wall time</th></tr>
{body}
<tr><th>all stages</th><th>{num("seconds-total", round(total, 1), f"{total / 60:.1f} min")}</th></tr></table>"""


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}img{max-width:100%}
table.figures{border-collapse:collapse;margin:1em 0}table.figures td,table.figures th{border:1px solid #ddd;
padding:.3em .6em;text-align:left;font-variant-numeric:tabular-nums}tr.answer{background:#fde8ec}
.missing{color:#a00}"""


def render(work) -> str:
    """The report of the work directory ``work`` as one HTML page."""
    work = Path(work)
    if not any((work / f).is_file() for f in ("pipeline.json", "table.json", "widths.json")):
        raise UsageError(f"{work} holds no pipeline artefacts (pipeline.json, table.json, widths.json); run "
                         f"`tfwidth pipeline --work {work}` first, or name the work directory it wrote")
    title = f"tfwidth report: {work.resolve().name}"
    head = ""
    if (work / "space.json").is_file():
        from tfwidth.space import SearchSpace
        space = SearchSpace.load(work / "space.json")
        head = (f"space {html.escape(space.name)} ({html.escape(space.arch)}, {space.resolution} px, hash "
                f"{num('space-hash', space.space_hash)}), {len(space.layer_names)} width variables")
    body = [fit_section(work), solve_sections(work), model_section(work), times_section(work)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{html.escape(title)}</h1><p>{head}</p>
{chr(10).join(body)}
</body></html>
"""


def write_report(work, output=None) -> Path:
    """Write render(``work``) to ``output`` (default WORK/report.html); returns the path written."""
    out = Path(output) if output else Path(work) / "report.html"
    atomic_write_bytes(out, render(work).encode("utf-8"))
    return out


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m tfwidth.report", description=(
        "Write a work directory's report (default WORK/report.html): the latency fit, every solver's front with "
        "the target and the answer, the answer's widths against the uniform network's, the exported model and "
        "the stages' wall times, on one self-contained HTML page. The pipeline writes it at its end."))
    p.add_argument("work", nargs="?", default="work", help="the pipeline's work directory (default: ./work)")
    p.add_argument("-o", "--output", type=output_file, help="where to write the page (default: WORK/report.html)")
    a = p.parse_args(argv)
    import time
    t0 = time.time()
    out = write_report(a.work, a.output)
    from device_profiler.console import took
    print(f"wrote {out} in {took(time.time() - t0)}: open it in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
