"""AOWS: after a warm-up, sample each layer's width from the chain MRF's marginals at a falling temperature.

Pure numpy (the schedule and the distributions); `AOWSCallback` at the bottom is the thin Keras glue that feeds them to
the supernet's sampler during `model.fit`.

The schedule is the paper's code (20 epochs: 5 warm-up epochs at uniform sampling, then T log-linearly from 1 to 0.01
over one epoch, to 0.001 by epoch 10, to 0.0005 at the end) written as fractions of training so short runs scale.
The schedule's temperatures were set for the paper's split-mean statistics, in which a layer's contrast between two
widths is 1/L of its real effect (each step's loss increase is divided over the L layers). The regression estimator
(tfwidth/stats.py) measures the real effect, so the same sharpness needs T * L: `sampling_state(..., scale=L)`,
which the callback applies whenever the regression is in use. On a balanced design the two give identical marginals
(tests/test_aows.py). Without it the first CIFAR AOWS run collapsed onto one configuration per epoch that jumped
from epoch to epoch, and its answers trailed OWS's (measured: docs/benchmarks.md, "AOWS sampling").

Exploration floor (``EXPLORE``): the sampled distribution is ``(1 - explore) * marginals + explore * uniform``, so
every width keeps at least ``explore / k`` of the draws. Why: the width statistics are a regression over the whole
run, and the loss increase it regresses grows over training. When the sampling distribution changes from epoch to
epoch, that trend is confounded with the widths: the widths AOWS favours late are measured while every increase is
large, so they come out costlier and the OWS answer moves away from them (negative feedback), off what the last
epochs trained. A simulation of the statistics (additive costs, per-batch noise, the measured trend) reproduces it,
and a floor of 0.5 keeps the answer's widths sampled with the same answer quality. With the floor no width is drawn
at less than half the uniform rate, which matters because at a short budget the costs are mostly noise, so what the
marginals starve is chosen largely at random. ``explore=0`` is the paper's sampling. (Measured: docs/benchmarks.md,
"AOWS sampling".)

Live probe (``probe_batches``): the floor treats the symptom; the cause is that the costs are a regression over
the whole run. With a live probe each update after the warm-up measures ``PROBE_CONFIGS`` random configurations of
the supernet *as it is at that step* on fixed images (tfwidth/probe.py) and the marginals use those costs alone:
no trend, no mixing with earlier sampling. Cost: one forward pass per configuration over the images, so per-epoch
updates (``every=0``) are the sensible pairing. It is what made AOWS beat OWS on the CIFAR benchmark rather than
trail it, so the CLI uses it by default (``--aows-probe-configs 200``). Early in training the probe can measure the
max network *worse* than random configurations: the fit's free constant absorbs that (tfwidth/stats.py,
"Intercept"); pinned at the max network, every cost came out 0 there. (Measured: docs/benchmarks.md, "AOWS
sampling".)

The distributions are a pure function of (statistics or weights, table, target, progress): a resumed run recomputes
exactly what the killed one would have used, so nothing but the statistics and weights (already in the checkpoint)
needs saving to continue the schedule; the sampler's probability variable is in the checkpoint too.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from tfwidth import mrf
from tfwidth.stats import acc_chain
from tfwidth.space import GraphCost, SearchSpace

# (fraction of training, temperature); the warm-up ends at the second point, T is log-linear between points.
SCHEDULE = ((0.0, 1.0), (0.25, 1.0), (0.30, 0.01), (0.50, 0.001), (1.0, 0.0005))
# share of every layer's draws spread uniformly over its widths after the warm-up (module docstring); 0 = the paper
EXPLORE = 0.5
# configurations each live-probe update measures (module docstring, "Live probe")
PROBE_CONFIGS = 200


def warmup_end(schedule=SCHEDULE) -> float:
    """The fraction of training at which the warm-up (uniform sampling) ends: the schedule's second point."""
    return schedule[1][0]


def temperature(progress: float, schedule=SCHEDULE) -> float:
    """The sampling temperature at ``progress`` (fraction of training, clipped to [0, 1]): log-linear between the
    schedule's points, so short runs follow the same curve as the paper's 20 epochs."""
    p = min(max(float(progress), 0.0), 1.0)
    for (x0, t0), (x1, t1) in zip(schedule, schedule[1:]):
        if p <= x1:
            r = 0.0 if x1 == x0 else (p - x0) / (x1 - x0)
            return float(10 ** ((1 - r) * math.log10(t0) + r * math.log10(t1)))
    return float(schedule[-1][1])


@dataclasses.dataclass
class SamplingState:
    progress: float
    warmup: bool
    temperature: float | None
    gamma: float | None
    widths: tuple | None  # the current OWS solution for the target
    predicted_ms: float | None
    probs: list  # per layer, a distribution over its choices (marginals mixed with uniform by ``explore``)
    explore: float = 0.0

    def entropy(self) -> list:
        return [float(-(p[p > 0] * np.log(p[p > 0])).sum()) for p in self.probs]

    def padded(self, kmax: int) -> np.ndarray:
        out = np.zeros((len(self.probs), kmax))
        for l, p in enumerate(self.probs):
            out[l, :len(p)] = p
        return out

    def to_json(self) -> dict:
        return {"progress": self.progress, "warmup": self.warmup, "temperature": self.temperature,
                "gamma": self.gamma, "widths": self.widths, "predicted_ms": self.predicted_ms,
                "explore": self.explore, "entropy": self.entropy(), "probs": [p.round(6).tolist() for p in self.probs]}


def sampling_state(space: SearchSpace, costs: list, latency: GraphCost, target_ms: float, progress: float,
                   schedule=SCHEDULE, scale: float = 1.0, explore: float = EXPLORE) -> SamplingState:
    """``scale`` multiplies the schedule's temperature (see the module docstring: L for regression costs);
    ``explore`` in [0, 1] mixes the marginals with the uniform distribution (the exploration floor)."""
    explore = float(explore)
    if not 0.0 <= explore <= 1.0:
        raise ValueError(f"explore must be in [0, 1], got {explore}")
    uniform = [np.full(k, 1.0 / k) for k in space.num_choices]
    acc = acc_chain(space, costs)
    sol = mrf.ows(acc, latency, target_ms)
    widths = space.to_widths(sol.indices) if sol.feasible else None
    pred = sol.latency if sol.feasible else None
    if progress < warmup_end(schedule) or not sol.feasible:
        return SamplingState(progress, True, None, sol.gamma, widths, pred, uniform)
    T = temperature(progress, schedule) * scale
    probs = [(1.0 - explore) * p + explore * u
             for p, u in zip(mrf.marginals(acc, latency, sol.gamma or 0.0, T), uniform)]
    return SamplingState(progress, False, T, sol.gamma, widths, pred, probs, explore)


def _keras_callback_base():
    import tfwidth  # noqa: F401
    import tf_keras as keras
    return keras.callbacks.Callback


class AOWSCallback(_keras_callback_base()):
    """Sets the supernet's per-layer sampling distributions from the MRF marginals, every `every` steps (0: at each
    epoch start), and logs temperature, gamma, entropies and the current OWS configuration each epoch
    (RUN_DIR/aows.jsonl and TensorBoard). ``explore``: the exploration floor (module docstring)."""

    def __init__(self, space: SearchSpace, latency: GraphCost, target_ms: float, total_steps: int,
                 run_dir=None, every: int = 0, schedule=SCHEDULE, view: str = "running", explore: float = EXPLORE,
                 probe_batches=None, probe_configs: int = PROBE_CONFIGS, seed: int = 0):
        super().__init__()
        # With probe_batches, each update after the warm-up measures probe_configs random configurations of the
        # supernet as it is now, on those fixed images (tfwidth/probe.py), and the marginals use these costs instead
        # of the statistics accumulated over training (see "Live probe" in the module docstring).
        self.probe_batches, self.probe_configs, self.seed = probe_batches, int(probe_configs), int(seed)
        self.probed: dict | None = None
        if not 0.0 <= float(explore) <= 1.0:
            raise ValueError(f"explore must be in [0, 1], got {explore}")
        self.explore = float(explore)
        self.space, self.latency, self.target_ms = space, latency, float(target_ms)
        self.total_steps, self.every, self.schedule, self.view = max(1, int(total_steps)), int(every), schedule, view
        self.run_dir = Path(run_dir) if run_dir else None
        self.state: SamplingState | None = None
        self._writer = None

    def _update(self):
        step = int(self.model.optimizer.iterations.numpy())
        stats = self.model.width_stats()
        costs, view = None, self.view
        if self.probe_batches is not None and step / self.total_steps >= warmup_end(self.schedule):
            from tfwidth import probe
            # configurations drawn from (seed, step): a resumed run measures what the killed one would have
            choices = probe.draw_configs(self.space, self.probe_configs, self.seed * 1_000_003 + step)
            delta, _ = probe.measure(self.model, self.probe_batches, choices)
            live = type(stats)(self.space)
            live.set_probe(choices, delta, {"configs": self.probe_configs, "step": step})
            costs, view, stats = live.costs("probe"), "probe", live
            self.probed = {"step": step, "configs": self.probe_configs, "mean_delta": float(np.mean(delta))}
        # the logged temperature is the effective one (schedule x scale)
        scale = self.space.num_layers if stats.has_regression(view) else 1.0
        self.state = sampling_state(self.space, costs if costs is not None else stats.costs(view), self.latency,
                                    self.target_ms, step / self.total_steps, self.schedule, scale=scale,
                                    explore=self.explore)
        self.model.set_sampling(self.state.padded(self.model.kmax))

    def on_epoch_begin(self, epoch, logs=None):
        if self.state is None and self.run_dir is not None and (self.run_dir / "aows.jsonl").exists():
            # resumed at `epoch`: drop what the killed run logged for epochs that are about to be redone
            path = self.run_dir / "aows.jsonl"
            keep = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["epoch"] <= epoch:
                        keep.append(line)
                except (json.JSONDecodeError, KeyError):
                    pass
            from tfwidth.artifacts import atomic_write_bytes
            atomic_write_bytes(path, "".join(l + "\n" for l in keep).encode())
        self._update()

    def on_train_batch_begin(self, batch, logs=None):
        if self.every and batch and batch % self.every == 0:
            self._update()

    def on_epoch_end(self, epoch, logs=None):
        if self.state is None:
            return
        rec = {"space_hash": self.space.space_hash, "epoch": epoch + 1, "target_ms": self.target_ms,
               **self.state.to_json(), "probe": self.probed}
        if logs is not None:  # visible in the Keras history and log.jsonl of the trainer
            logs["aows_temperature"] = self.state.temperature or 0.0
            logs["aows_mean_entropy"] = float(np.mean(self.state.entropy()))
        if self.run_dir is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "aows.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        import tensorflow as tf
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.run_dir / "tb" / "aows"))
        with self._writer.as_default(step=epoch + 1):
            tf.summary.scalar("aows/temperature", self.state.temperature or 1.0)
            tf.summary.scalar("aows/gamma", self.state.gamma or 0.0)
            tf.summary.scalar("aows/mean_entropy", float(np.mean(self.state.entropy())))
            if self.state.predicted_ms is not None:
                tf.summary.scalar("aows/predicted_ms", self.state.predicted_ms)
            for name, p in zip(self.space.layer_names, self.state.probs):
                tf.summary.histogram(f"aows/probs/{name}", np.repeat(np.arange(len(p)), np.round(p * 1000).astype(int)))
