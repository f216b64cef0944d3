"""The exact solver against its own earlier revision, target by target in one run: time, certification, answers.

    python tools/bench_exact.py [--preset mobilenet_v2] [--points 20] [--max-params N] [--baseline e46e57a]

The baseline is tfwidth/mrf.py as it was at git revision --baseline (read with `git show`, loaded beside the current
one); both solve the same synthetic problem of tools/bench_solve.py at the same targets, interleaved (new, then old,
per target), so the machine's load falls on both alike. Prints CPU time per target, whether each answer is certified
optimal, and the objective difference (0 whenever both are certified: they are the same optimum).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfwidth  # noqa: E402,F401
from bench_solve import synthetic  # noqa: E402
from tfwidth import mrf  # noqa: E402
from tfwidth.errors import UsageError, run_cli  # noqa: E402
from tfwidth.stats import acc_chain  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# the last revision before the exact solver's Lagrangian pruning (issue 20)
BASELINE = "e46e57a"


def load_revision(rev: str):
    """tfwidth/mrf.py at git revision ``rev``, as a module of its own."""
    try:
        src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:tfwidth/mrf.py"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        raise UsageError(f"cannot read tfwidth/mrf.py at revision {rev!r}; give --baseline a revision of this "
                         f"checkout") from None
    path = os.path.join(tempfile.mkdtemp(), "mrf_baseline.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("mrf_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mrf_baseline"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mobilenet_v2")
    p.add_argument("--points", type=int, default=20, help="targets, evenly from the fastest to the widest network")
    p.add_argument("--max-params", type=float, help="also a parameter budget (e.g. the 1.0x network's count)")
    p.add_argument("--baseline", default=BASELINE, help="git revision of the solver to compare with")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    old = load_revision(a.baseline)
    space, costs, table = synthetic(a.seed, preset_name=a.preset)
    acc, lat = acc_chain(space, costs), table.chain()
    extra = [(space.param_chain(), float(a.max_params))] if a.max_params else None
    lo, hi = mrf.min_total(lat)[1], lat.total(tuple(len(c) - 1 for c in space.choices))
    t_new, t_old, cert_new, cert_old = [], [], 0, 0
    for q in np.linspace(0.02, 0.98, a.points):
        target = lo + q * (hi - lo)
        t = time.process_time()
        n = mrf.exact(acc, lat, target, extra)
        t_new.append(time.process_time() - t)
        t = time.process_time()
        o = old.exact(acc, lat, target, extra)
        t_old.append(time.process_time() - t)
        cert_new, cert_old = cert_new + n.certified, cert_old + o.certified
        d = n.objective - o.objective if n.feasible and o.feasible else 0.0
        print(f"target {target:7.2f} ms  new {t_new[-1]:6.2f} s {'certified' if n.certified else f'gap {n.gap:.4f}'}"
              f"  |  {a.baseline} {t_old[-1]:6.2f} s {'certified' if o.certified else f'gap {o.gap:.4f}'}"
              f"  |  objective new - old {d:+.6f}{'' if n.indices == o.indices else ' (other widths)'}", flush=True)
    what = "latency and parameter budgets" if extra else "latency budget"
    print(f"{a.preset}, {what}, {a.points} targets, CPU time per target (median / max; targets over 1 s; certified):")
    print(f"  now              {np.median(t_new):7.3f} s / {max(t_new):6.2f} s; {sum(x > 1 for x in t_new):2d} over 1 s; "
          f"{cert_new}/{a.points} certified")
    print(f"  {a.baseline:<16} {np.median(t_old):7.3f} s / {max(t_old):6.2f} s; {sum(x > 1 for x in t_old):2d} over 1 s; "
          f"{cert_old}/{a.points} certified")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
