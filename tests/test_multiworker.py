"""Multi-worker training for real: two worker processes on 127.0.0.1 (TF_CONFIG with two free local ports) train the
tiny supernet and fine-tune an export with --strategy multiworker (tf.distribute.MultiWorkerMirroredStrategy), and
one worker at the same global batch is the reference.

One job is killed twice and restarted, so that one run of each process pair checks everything at once:
  1. reference: one process, no TF_CONFIG: train 2 epochs (+ probe), export 2 epochs;
  2. two workers: worker 1 kills itself in the middle of training epoch 2, then the test kills the chief, which
     waits for it in a collective;
  3. both restarted with --resume: training finishes epoch 2 (and the probe, split over the workers), the export
     starts, and worker 1 kills itself in the middle of fine-tuning epoch 2; the chief is killed likewise;
  4. both restarted with --resume: the export finishes.
Checked against the reference: epoch 1 (two workers, uninterrupted) and epoch 2 (resumed) losses, the examples of
every step (each worker reads only its share of the global batch, nothing twice), the width statistics and the probe,
every weight of the supernet and of the exported model on both workers; and the chief alone wrote the run directory
(the same files as the reference's, no worker scratch left anywhere).

Grappler is off in these processes (reference included): on this tiny graph it took ~3x longer to trace the
multi-worker step than the step takes to run (measured 42 s vs 14 s for the first step), and the comparison is like
for like.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tfwidth.artifacts import write_json
from tfwidth.space import tiny_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = tiny_space(resolution=8, levels=3, base=8, layers=4)
WIDTHS = (12, 8, 12, 4)
N_TRAIN, BATCH = 64, 16  # 4 steps per epoch

# One process of a test job: runs `tfwidth.train` then `tfwidth.export` (argv split at "--export"; either part may be
# empty) as their CLIs.
# Env: RES (directory for this process's records), KILL ("train:E:B" or "export:E:B": kill this process at batch B
# of epoch E, counted from 0). Records: RES/ids.jsonl (the example ids of every training batch this process read,
# with the call that made the pipeline: [start, end, pipeline, pipelines]) and RES/supernet.npz, RES/export.npz (the
# weights at the end of each stage).
WORKER = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    import tfwidth, tensorflow as tf
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    import tf_keras as keras
    from tfwidth import data as D, export as E, train as TR, training as T
    from tfwidth.errors import run_cli

    res, kill = os.environ["RES"], os.environ.get("KILL", "")
    os.makedirs(res, exist_ok=True)
    ids_file = open(os.path.join(res, "ids.jsonl"), "a")
    original_epochs = D.Data.train_epochs

    def recording(self, start, end, augment=True, pipeline=(0, 1), batch=None):
        ds = original_epochs(self, start, end, augment, pipeline, batch)
        if sys._getframe(1).f_code.co_name not in ("distributed_epochs", "pipeline"):
            return ds  # BatchNorm calibration, probe images: not training batches
        call = [int(start), int(end), int(pipeline[0]), int(pipeline[1])]

        def write(x):  # every image is constant, its value 3 * its index (see _npz)
            ids = np.rint((x.numpy()[:, 0, 0, 0] + 1.0) * 127.5 / 3).astype(int).tolist()
            ids_file.write(json.dumps({"call": call, "ids": ids}) + "\\n")
            ids_file.flush()
            return np.int64(0)

        def record(x, y):
            with tf.control_dependencies([tf.py_function(write, [x], tf.int64)]):
                return tf.identity(x), y
        return ds.map(record)

    D.Data.train_epochs = recording

    def die(where):
        if kill == where:
            os.kill(os.getpid(), signal.SIGKILL)

    class Killer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            die(f"train:{self.epoch}:{batch}")

    original_train = TR.train_supernet
    TR.train_supernet = lambda *a, extra_callbacks=(), **k: original_train(
        *a, extra_callbacks=(*extra_callbacks, Killer()), **k)
    original_distributed = T.distributed_epochs

    def distributed(strategy, data, start, end, augment=True):
        ds = original_distributed(strategy, data, start, end, augment)
        if sys._getframe(1).f_code.co_name != "train_plain":
            return ds

        def batches():
            for i, b in enumerate(ds):
                die(f"export:{start}:{i}")
                yield b
        return batches()

    T.distributed_epochs = distributed
    kept = {}
    original_result = TR.train
    TR.train = lambda *a, **k: kept.setdefault("supernet", original_result(*a, **k))
    original_tune = E.fine_tune
    E.fine_tune = lambda *a, **k: kept.setdefault("export", original_tune(*a, **k))

    argv = sys.argv[1:]
    cut = argv.index("--export")
    for stage, main, args in (("supernet", TR.main, argv[:cut]), ("export", E.main, argv[cut + 1:])):
        if not args:
            continue
        code = run_cli(main, args)
        if code:
            sys.exit(code)
        # the layers' weights (mirrored: read locally; the metrics' sums would be read collectively)
        model = kept[stage].model
        layers = model.slim_layers() if stage == "supernet" else model.layers
        np.savez(os.path.join(res, stage + ".npz"), **{f"{l.name}/{w.name}": w.numpy() for l in layers
                                                        for w in l.weights})
""")


def _npz(path):
    """Constant images whose value is 3 x their index (augmentation's reflect-pad and crop keep them constant, the
    normalisation is affine): every batch names its examples."""
    n = N_TRAIN
    x = np.broadcast_to((np.arange(n, dtype=np.uint8) * 3)[:, None, None, None], (n, 8, 8, 3)).copy()
    rng = np.random.default_rng(0)
    np.savez(path, x_train=x, y_train=np.arange(n) % 10, x_test=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(20) % 10)
    return path


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Job:
    """The test's cluster: ``workers`` processes running WORKER with ``argv`` (one without TF_CONFIG when 1)."""

    def __init__(self, tmp: Path, name: str, argv, workers: int, kill: dict | None = None):
        self.tmp, self.name, self.t0 = tmp, name, time.time()
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _ports(workers)]}
        self.procs = []
        for i in range(workers):
            # one thread each: the processes share two cores
            env = dict(os.environ, PYTHONPATH=str(ROOT), TF_USE_LEGACY_KERAS="1", RES=str(tmp / "res" / str(i)),
                       TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                       TMPDIR=str(self.scratch(i)), KILL=(kill or {}).get(i, ""))
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            self.procs.append(subprocess.Popen([sys.executable, "-c", WORKER, *map(str, argv)], env=env,
                                               stdout=open(tmp / f"{name}.w{i}.log", "w"), stderr=subprocess.STDOUT))

    def scratch(self, i):
        d = self.tmp / "scratch" / str(i)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log(self, i):
        return (self.tmp / f"{self.name}.w{i}.log").read_text()[-4000:]

    def finish(self, timeout=400):
        for i, p in enumerate(self.procs):
            assert p.wait(timeout) == 0, f"worker {i} of {self.name} exited {p.returncode}:\n{self.log(i)}"
        print(f"{self.name}: {time.time() - self.t0:.0f} s")

    def killed(self, timeout=400):
        """Worker 1 kills itself (KILL); then the chief, stuck in a collective without it, is killed like a job
        manager would."""
        assert self.procs[1].wait(timeout) == -signal.SIGKILL, self.log(1)
        time.sleep(1.0)
        assert self.procs[0].poll() is None, f"the chief ended without worker 1:\n{self.log(0)}"
        self.procs[0].send_signal(signal.SIGKILL)
        self.procs[0].wait(60)
        print(f"{self.name}: {time.time() - self.t0:.0f} s")


def _argv(run: Path, data: Path, widths: Path, out: Path, workers: int, train=True, resume_train=False,
          resume_export=False):
    strategy = ["--strategy", "multiworker"] if workers > 1 else []
    return [*(["--space", run.parent / "space.json", "--dataset", f"npz:{data}", "--epochs", 2, "--batch-size", BATCH,
               "--out", run, "--probe-configs", 8, "--probe-images", 32, "--calib-batches", 2, "--quiet", *strategy,
               *(["--resume"] if resume_train else [])] if train else []),
            "--export", "--widths", widths, "--run", run, "--dataset", f"npz:{data}", "--init", "supernet",
            "--epochs", 2, "--batch-size", BATCH, "--calib-batches", 0, "--no-measure", "--no-progress",
            "--representative", 16, "-o", out / "m.tflite", *strategy, *(["--resume"] if resume_export else [])]


def _ids(res: Path) -> list[dict]:
    return [json.loads(l) for l in (res / "ids.jsonl").read_text().splitlines()]


def _files(run: Path) -> set:
    """The run directory's files, TensorBoard event files by their directory only (their names hold a time)."""
    return {str(p.relative_to(run).parent if "tfevents" in p.name else p.relative_to(run))
            for p in run.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_workers_train_and_export_as_one_and_resume_after_a_kill(tmp_path):
    data = _npz(tmp_path / "tiny.npz")
    for d in ("ref", "mw"):
        (tmp_path / d).mkdir()
        SPACE.save(tmp_path / d / "space.json")
    widths = tmp_path / "widths.json"
    write_json(widths, {"kind": "widths", "space_hash": SPACE.space_hash, "space": SPACE.to_json(), "method": "test",
                        "target_ms": 0.5, "widths": list(WIDTHS)})
    ref_run, run = tmp_path / "ref" / "run", tmp_path / "mw" / "run"

    # 1 and 2 side by side. 2: killed in training epoch 2 (index 1), batch 1: the last checkpoint is epoch 1's
    ref = Job(tmp_path / "ref", "ref", _argv(ref_run, data, widths, tmp_path / "ref", 1), 1)
    job = Job(tmp_path / "mw", "killed_train", _argv(run, data, widths, tmp_path / "mw", 2), 2, kill={1: "train:1:1"})
    job.killed()
    ref.finish()
    assert json.loads((run / "ckpt" / "checkpoint.json").read_text())["epoch"] == 1
    epoch1 = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in epoch1] == [1]
    first = {i: _ids(tmp_path / "mw" / "res" / str(i)) for i in (0, 1)}
    # 3. resumed: training finishes; killed in fine-tuning epoch 2, batch 1
    job = Job(tmp_path / "mw", "killed_export", _argv(run, data, widths, tmp_path / "mw", 2, resume_train=True), 2,
              kill={1: "export:1:1"})
    job.killed()
    assert not (tmp_path / "mw" / "m.report.json").exists()
    assert "worker 1: training done" in job.log(1)
    # 4. resumed again: the export finishes
    job = Job(tmp_path / "mw", "resumed", _argv(run, data, widths, tmp_path / "mw", 2, train=False,
                                                resume_export=True), 2)
    job.finish()
    assert "worker 1: training done; the chief converts" in job.log(1)

    # losses: epoch 1 uninterrupted on two workers, epoch 2 after the resume, as one worker's
    ref_log = [json.loads(l) for l in (ref_run / "log.jsonl").read_text().splitlines()]
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert log[0] == epoch1[0]  # the killed run's line, kept by the resume
    assert [l["epoch"] for l in log] == [1, 2] and [l["step"] for l in log] == [4, 8]
    for a, b in zip(log, ref_log):
        for k in ("loss", "max_loss", "min_loss", "rand_loss", "max_top1", "val_max_loss", "val_max_top1", "lr"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["epoch"], k)

    # every step's global batch: the two workers' shares, disjoint, make up the reference's batch of that step
    ref_ids = _ids(tmp_path / "ref" / "res" / "0")
    train_ref = [r["ids"] for r in ref_ids if r["call"] == [0, 2, 0, 1]]
    assert len(train_ref) == 8 and sorted(sum(train_ref[:4], [])) == list(range(N_TRAIN))
    resumed = {i: _ids(tmp_path / "mw" / "res" / str(i)) for i in (0, 1)}
    share = {(i, 0): [r["ids"] for r in first[i] if r["call"] == [0, 2, i, 2]][:4] for i in (0, 1)}
    share.update({(i, 1): [r["ids"] for r in resumed[i][len(first[i]):] if r["call"] == [1, 2, i, 2]][:4]
                  for i in (0, 1)})
    for epoch in (0, 1):
        for step in range(4):
            a, b = share[(0, epoch)][step], share[(1, epoch)][step]
            assert len(a) == len(b) == BATCH // 2 and not set(a) & set(b), (epoch, step, a, b)
            assert a + b == train_ref[4 * epoch + step], (epoch, step)
    # the export's fine-tuning reads its batches the same way: epoch 1 from the killed run, epoch 2 after resume
    tune_ref = [r["ids"] for r in ref_ids if r["call"][1] - r["call"][0] == 1 and r["call"][3] == 1]
    assert len(tune_ref) == 8
    for epoch in (0, 1):
        shares = [[r["ids"] for r in resumed[i] if r["call"] == [epoch, epoch + 1, i, 2]][-4:] for i in (0, 1)]
        assert [a + b for a, b in zip(*shares)] == tune_ref[4 * epoch:4 * epoch + 4], epoch

    # width statistics (all-reduced every step) and the probe (split over the workers, gathered), written once
    ref_stats, stats = (json.loads((r / "stats.json").read_text()) for r in (ref_run, run))
    assert stats["epochs"] == ref_stats["epochs"] == 2
    for k in ("sum", "count"):
        # per-example loss differences of float32 losses ~2.3, summed: ~1e-5 apart over 128 examples
        np.testing.assert_allclose(stats[k], ref_stats[k], rtol=1e-4, atol=1e-4, err_msg=k)
    assert stats["probe"]["choices"] == ref_stats["probe"]["choices"]
    np.testing.assert_allclose(stats["probe"]["delta"], ref_stats["probe"]["delta"], rtol=1e-4, atol=1e-5)
    assert stats["probe"]["info"]["configs"] == 8

    # every weight on both workers: the supernet and the fine-tuned export model
    for stage in ("supernet", "export"):
        ref_w = np.load(tmp_path / "ref" / "res" / "0" / f"{stage}.npz")
        for i in (0, 1):
            w = np.load(tmp_path / "mw" / "res" / str(i) / f"{stage}.npz")
            assert sorted(w.files) == sorted(ref_w.files) and len(w.files) > 8
            for k in ref_w.files:
                # one device's fused BatchNorm moves the variance with n/(n-1) (Bessel), the synchronised one of
                # two workers without (as in test_export's mirrored test): with n = 16 values per channel at the
                # last layers, momentum 0.99 and 8 steps, up to 8 x 0.01 / 15 = 5e-3 apart
                rtol = 5e-3 if stage == "export" and "moving_variance" in k else 1e-4
                np.testing.assert_allclose(w[k], ref_w[k], rtol=rtol, atol=1e-5, err_msg=f"worker {i} {k}")
    rep, ref_rep = (json.loads((d / "m.report.json").read_text()) for d in (tmp_path / "mw", tmp_path / "ref"))
    assert rep["training"]["replicas"] == 2 and rep["training"]["strategy"] == "multiworker"
    assert [h["epoch"] for h in rep["training"]["history"]] == [2]  # this invocation trained epoch 2 only
    assert rep["training"]["history"][0]["loss"] == pytest.approx(ref_rep["training"]["history"][1]["loss"],
                                                                  rel=1e-5)
    assert rep["keras"]["top1"] == ref_rep["keras"]["top1"]

    # the chief alone wrote: the reference's files, no worker's scratch in the run directory or its temp dir
    assert _files(run) == _files(ref_run)
    assert not [p for i in (0, 1) for p in (tmp_path / "mw" / "scratch" / str(i)).iterdir()
                if p.name.startswith("tfwidth")]


def test_pipelines_split_every_global_batch(tmp_path):
    """Data.train_epochs(pipeline=(k, n), batch=b): pipeline k's rows of every step are the k-th slice of that step's
    global batch, in batches of b; the slices of one step make up the global batch, over an epoch every example."""
    from tfwidth.data import load_data
    from tfwidth.errors import UsageError
    data = load_data(f"npz:{_npz(tmp_path / 'tiny.npz')}", SPACE, BATCH)

    def ids(ds):
        return [np.rint((x.numpy()[:, 0, 0, 0] + 1.0) * 127.5 / 3).astype(int).tolist() for x, _ in ds]
    whole = ids(data.train_epochs(1, 3))
    halves = [ids(data.train_epochs(1, 3, pipeline=(k, 2))) for k in (0, 1)]
    quarters = [ids(data.train_epochs(1, 3, pipeline=(k, 2), batch=BATCH // 4)) for k in (0, 1)]
    assert len(whole) == 8 and all(len(h) == 8 for h in halves) and all(len(q) == 16 for q in quarters)
    for step, batch in enumerate(whole):
        assert halves[0][step] + halves[1][step] == batch
        assert sum((quarters[k][2 * step] + quarters[k][2 * step + 1] for k in (0, 1)), []) == batch
    assert sorted(sum(whole[:4], [])) == sorted(sum(whole[4:], [])) == list(range(N_TRAIN))
    with pytest.raises(UsageError, match="does not split into 3 input pipelines"):
        data.train_epochs(0, 1, pipeline=(0, 3))
