"""Per layer and width: how much loss a width costs versus the full network (the solver's unary terms). numpy only.

Each training sample's loss increase over the max network is attributed to the layers it was sampled for
(one-layer sampling: the one changed layer; all-layers sampling: every layer, as the paper averages them), split
evenly between them (the paper's delta / len(path)), so that the sum of the per-layer costs over a configuration
estimates that configuration's loss increase under either sampling and the AOWS temperatures mean the same thing.
Three views are kept: the running mean since the start, the last complete epoch (the paper's window), and the
epoch in progress.
"""
from __future__ import annotations

import numpy as np

from tfwidth.artifacts import check_space, read_json, write_json
from tfwidth.errors import UsageError
from tfwidth.space import SearchSpace


class WidthStats:
    def __init__(self, space: SearchSpace):
        self.space = space
        k = max(space.num_choices)
        shape = (space.num_layers, k)
        self.sum = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int64)
        self.window_sum = np.zeros(shape)
        self.window_count = np.zeros(shape, dtype=np.int64)
        self.cur_sum = np.zeros(shape)
        self.cur_count = np.zeros(shape, dtype=np.int64)
        self.epochs = 0

    def update(self, choices, delta, mask=None) -> None:
        """choices: [N, L] choice indices; delta: [N] loss increase; mask: [N, L] bool, layers to attribute to."""
        choices = np.asarray(choices, dtype=np.int64)
        delta = np.asarray(delta, dtype=np.float64)
        mask = np.ones(choices.shape, bool) if mask is None else np.asarray(mask, bool)
        n, L = choices.shape
        layer = np.broadcast_to(np.arange(L), (n, L))[mask]
        ch = choices[mask]
        share = delta / np.maximum(mask.sum(axis=1), 1)
        d = np.broadcast_to(share[:, None], (n, L))[mask]
        flat = layer * self.sum.shape[1] + ch
        size = self.sum.size
        self.cur_sum += np.bincount(flat, weights=d, minlength=size).reshape(self.sum.shape)
        self.cur_count += np.bincount(flat, minlength=size).reshape(self.sum.shape)

    def add_arrays(self, s, c) -> None:
        """Add accumulated [L, K] sums and counts (e.g. from TF variables), already split as `update` does."""
        self.cur_sum += np.asarray(s, np.float64)
        self.cur_count += np.asarray(c, np.int64)

    def end_epoch(self) -> None:
        self.sum += self.cur_sum
        self.count += self.cur_count
        self.window_sum, self.window_count = self.cur_sum, self.cur_count
        self.cur_sum = np.zeros_like(self.sum)
        self.cur_count = np.zeros_like(self.count)
        self.epochs += 1

    def mean(self, view: str = "running") -> np.ndarray:
        s, c = {"running": (self.sum + self.cur_sum, self.count + self.cur_count),
                "window": (self.window_sum, self.window_count),
                "current": (self.cur_sum, self.cur_count)}[view]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def costs(self, view: str = "running") -> list:
        """Per layer, an array over its choices of the mean loss increase; unmeasured widths are interpolated from
        their measured neighbours (constant beyond the ends) so the solver sees no NaN. All-NaN layer -> zeros."""
        m = self.mean(view)
        if view == "window" and not np.isfinite(m).any():
            m = self.mean("running")
        out = []
        for l, k in enumerate(self.space.num_choices):
            row = m[l, :k]
            ok = np.isfinite(row)
            if not ok.any():
                out.append(np.zeros(k))
            elif ok.all():
                out.append(row.copy())
            else:
                x = np.arange(k)
                out.append(np.interp(x, x[ok], row[ok]))
        return out

    def unmeasured(self) -> list:
        c = self.count + self.cur_count
        return [(self.space.layer_names[l], self.space.choices[l][j])
                for l, k in enumerate(self.space.num_choices) for j in range(k) if c[l, j] == 0]

    # ---- serialisation ----------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        def rows(a):
            return [a[l, :k].tolist() for l, k in enumerate(self.space.num_choices)]
        mean = self.mean("running")
        return {"kind": "width_stats", "space_hash": self.space.space_hash, "space": self.space.to_json(),
                "epochs": self.epochs, "layers": list(self.space.layer_names),
                "widths": [list(c) for c in self.space.choices],
                "mean": [[None if not np.isfinite(v) else float(v) for v in r] for r in rows(mean)],
                "sum": rows(self.sum), "count": rows(self.count),
                "window_sum": rows(self.window_sum), "window_count": rows(self.window_count),
                "cur_sum": rows(self.cur_sum), "cur_count": rows(self.cur_count)}

    @classmethod
    def from_json(cls, d: dict, space: SearchSpace | None = None) -> "WidthStats":
        if space is None:
            if "space" not in d:
                raise UsageError("stats file embeds no space; pass --space")
            space = SearchSpace.from_dict(d["space"])
        check_space(d, space, "stats")
        st = cls(space)
        for name in ("sum", "count", "window_sum", "window_count", "cur_sum", "cur_count"):
            arr = getattr(st, name)
            for l, row in enumerate(d[name]):
                arr[l, :len(row)] = row
        st.epochs = int(d.get("epochs", 0))
        for name in ("sum", "window_sum", "cur_sum"):
            if not np.isfinite(getattr(st, name)).all():
                raise UsageError(f"stats file has NaN or infinite values in {name}; the training diverged")
        return st

    def save(self, path) -> None:
        write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path, space: SearchSpace | None = None) -> "WidthStats":
        return cls.from_json(read_json(path, "stats"), space)
