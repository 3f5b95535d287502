"""Building a zoo: training, scoring every snapshot, resumable persistence.

:func:`build_zoo` is what ``python -m experiments.make_zoo`` and the flow-training command
call: it returns the path of a completed zoo matching the config, reusing one that exists,
resuming an interrupted build, or building from scratch.

Resume files live in ``.<name>.partial/`` next to the target directory:
``fingerprint.json`` (config fingerprint), ``epoch_<e>.npz`` (snapshots and their metrics
of epoch ``e``) and ``state.npz`` (training state after the last finished epoch, written
after that epoch's file). Every file is written atomically, so a build killed at any
moment resumes from the last finished checkpoint; a partial directory whose fingerprint
differs from the config is discarded and the build restarts.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import time
from collections.abc import Callable
import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from weightflow_jax import mlp
from weightflow_jax.zoo import store, trainer
from weightflow_jax.zoo.trainer import Dataset, EpochOutput, TrainState

__all__ = ["build_zoo", "train_zoo", "load_data"]


def _zoo_cfg(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    if "zoo" in config and isinstance(config.zoo, ml_collections.ConfigDict):
        return config.zoo
    if "arch" not in config or "num_runs" not in config:
        raise ValueError(
            "expected a zoo config (weightflow_jax.zoo.presets.zoo_config) or a config with "
            f"a .zoo field; got fields {sorted(config.keys())}")
    return config


def load_data(config: ml_collections.ConfigDict) -> Dataset:
    """Loads ``config.dataset`` with :func:`weightflow_jax.data.load` (train and test)."""
    from weightflow_jax import data as wdata  # imported lazily: data I/O is optional here

    source = str(config.data.source)
    kw = dict(source=None if source in ("", "auto") else source,
              data_dir=str(config.data.data_dir) or None, seed=int(config.data.seed))
    x_tr, y_tr = wdata.load(config.dataset, "train", **kw)
    x_te, y_te = wdata.load(config.dataset, "test", **kw)
    return Dataset(x_tr, y_tr, x_te, y_te)


def _flat(snaps: mlp.Params) -> mlp.Params:
    """``(nb, R, ...)`` -> ``(nb * R, ...)`` numpy."""
    out = []
    for w, b in snaps:
        w, b = np.asarray(w), np.asarray(b)
        out.append((w.reshape((-1,) + w.shape[2:]), b.reshape((-1,) + b.shape[2:])))
    return out


def _score(config, snaps, eval_data) -> dict[str, np.ndarray]:
    x_tr, y_tr, x_te, y_te = eval_data
    flat = _flat(snaps)
    shape = np.shape(snaps[0][0])[:2]
    c = int(config.eval.chunk_size)
    tr_loss, tr_acc = trainer.evaluate(flat, x_tr, y_tr, c)
    te_loss, te_acc = trainer.evaluate(flat, x_te, y_te, c)
    return {k: v.reshape(shape) for k, v in
            dict(train_loss=tr_loss, train_acc=tr_acc, test_loss=te_loss, test_acc=te_acc).items()}


def _assemble(config, data: Dataset, epochs: list[dict], epoch_losses: np.ndarray,
              seconds: float) -> store.Zoo:
    """Per-epoch chunks ``(nb, R, ...)`` -> run-major :class:`store.Zoo`."""
    sizes = mlp.parse_arch(config.arch)
    r = int(config.num_runs)
    n_train = int(np.shape(data.x_train)[0])
    steps_run, epochs_run = trainer.snapshot_schedule(config, n_train)
    t = len(steps_run)

    def run_major(key: str) -> np.ndarray:
        a = np.concatenate([c[key] for c in epochs], axis=0)  # (T, R, ...)
        return np.ascontiguousarray(np.moveaxis(a, 1, 0).reshape((r * t,) + a.shape[2:]))

    params = [(run_major(f"W{l}"), run_major(f"b{l}")) for l in range(len(sizes) - 1)]
    metrics = {k: run_major(k).astype(np.float32) for k in store.METRIC_KEYS}
    metrics["epoch_train_loss"] = np.asarray(epoch_losses, np.float32)
    run_id = np.repeat(np.arange(r, dtype=np.int32), t)
    step = np.tile(steps_run, r)
    epoch = np.tile(epochs_run, r)
    final = (run_id[None, :] == np.arange(r)[:, None]) & (step[None, :] == steps_run[-1])
    final_idx = np.argmax(final, axis=1)
    x_tr, _, x_te, _ = trainer.eval_subsets(config, data)
    early_every, early_steps = trainer.early_window(config)

    def stats(key, idx=slice(None)):
        v = metrics[key][idx]
        return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                "max": float(v.max())}

    meta = {
        "task": config.task,
        "dataset": config.dataset,
        "arch": mlp.format_arch(sizes),
        "layer_sizes": list(sizes),
        "num_params": mlp.num_params(sizes),
        "num_runs": r,
        "num_snapshots": int(r * t),
        "snapshots_per_run": int(t),
        "steps_per_epoch": trainer.steps_per_epoch(config, n_train),
        "num_epochs": int(config.num_epochs),
        "burn_in_epochs": int(config.burn_in_epochs),
        "snapshot_every": int(config.snapshot_every),
        "early_snapshot_every": early_every,
        "early_snapshot_steps": early_steps,
        "batch_size": int(config.batch_size),
        "same_batch_order": bool(config.same_batch_order),
        "seed": int(config.seed),
        "optimizer": config.optimizer.to_dict(),
        "init": config.init.to_dict(),
        "n_train": n_train,
        "n_test": int(np.shape(data.x_test)[0]),
        "n_eval_train": int(x_tr.shape[0]),
        "n_eval_test": int(x_te.shape[0]),
        "config": config.to_dict(),
        "config_fingerprint": store.config_fingerprint(config),
        "data_sha256": store.data_fingerprint(*data),
        "summary": {
            "final": {k: stats(k, final_idx) for k in store.METRIC_KEYS},
            "all": {k: stats(k) for k in store.METRIC_KEYS},
        },
        "build_seconds": float(seconds),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    return store.Zoo(params, run_id, step, epoch, metrics, meta)


def _train(config, data: Dataset, *, progress: bool, partial: str | None,
           callback: Callable[[EpochOutput], None] | None) -> store.Zoo:
    """Shared loop of :func:`train_zoo` (``partial=None``) and :func:`build_zoo`."""
    t0 = time.time()
    data = trainer.check_data(config, data)
    eval_data = trainer.eval_subsets(config, data)
    state = None
    chunks: dict[int, dict] = {}
    losses: dict[int, np.ndarray] = {}
    elapsed = 0.0
    if partial is not None:
        state, chunks, losses, elapsed = _resume(config, partial)
    start = 0 if state is None else state.epoch
    bar = tqdm(total=int(config.num_epochs), initial=start, disable=not progress,
               desc=f"zoo {config.task} {config.arch} x{config.num_runs}", unit="epoch")
    try:
        for state, out in trainer.iterate_epochs(config, data, state):
            losses[out.epoch] = out.train_loss
            chunk = {"epoch_loss": out.train_loss}
            post = {"loss": float(out.train_loss.mean())}
            if out.snapshots is not None:
                for l, (w, b) in enumerate(out.snapshots):
                    chunk[f"W{l}"] = np.asarray(w)
                    chunk[f"b{l}"] = np.asarray(b)
                chunk.update(_score(config, out.snapshots, eval_data))
                post["test_acc"] = float(chunk["test_acc"][-1].mean())
                chunks[out.epoch] = chunk
            if partial is not None:
                store.atomic_savez(os.path.join(partial, f"epoch_{out.epoch:05d}.npz"), **chunk)
                if (state.epoch % int(config.checkpoint_every) == 0
                        or state.epoch == config.num_epochs):
                    _save_state(partial, state, elapsed + time.time() - t0)
            bar.update(1)
            bar.set_postfix(post)
            if callback is not None:
                callback(out)
    finally:
        bar.close()
    keep = [chunks[e] for e in range(int(config.burn_in_epochs), int(config.num_epochs))]
    epoch_losses = np.stack([losses[e] for e in range(int(config.num_epochs))])
    return _assemble(config, data, keep, epoch_losses, elapsed + time.time() - t0)


def _save_state(partial: str, state: TrainState, elapsed: float) -> None:
    leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
    arrays = {f"leaf_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)}
    store.atomic_savez(os.path.join(partial, "state.npz"), epoch=np.int64(state.epoch),
                       elapsed=np.float64(elapsed), **arrays)


def _resume(config, partial: str):
    """Loads ``state.npz`` and the epoch files before it; ``(None, {}, {}, 0)`` if none."""
    path = os.path.join(partial, "state.npz")
    if not os.path.exists(path):
        return None, {}, {}, 0.0
    fresh = trainer.init_state(config)
    treedef = jax.tree_util.tree_structure((fresh.params, fresh.opt_state))
    with np.load(path) as f:
        epoch = int(f["epoch"])
        elapsed = float(f["elapsed"])
        leaves = [f[f"leaf_{i:04d}"] for i in range(treedef.num_leaves)]
    ref = jax.tree_util.tree_leaves((fresh.params, fresh.opt_state))
    for a, b in zip(leaves, ref):
        if a.shape != b.shape:
            raise ValueError(f"resume state in {partial} does not match the config "
                             f"({a.shape} vs {b.shape}); delete {partial}")
    params, opt_state = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(a, dtype=b.dtype) for a, b in zip(leaves, ref)])
    chunks, losses = {}, {}
    for e in range(epoch):
        with np.load(os.path.join(partial, f"epoch_{e:05d}.npz")) as f:
            c = {k: f[k] for k in f.files}
        losses[e] = c["epoch_loss"]
        if e >= config.burn_in_epochs:
            chunks[e] = c
    return TrainState(params, opt_state, epoch), chunks, losses, elapsed


def train_zoo(config: ml_collections.ConfigDict, data: Dataset, *,
              progress: bool = False,
              callback: Callable[[EpochOutput], None] | None = None) -> store.Zoo:
    """Trains a zoo in memory (nothing written) and scores every snapshot.

    Args:
      config: a zoo config (:func:`weightflow_jax.zoo.presets.zoo_config`) or a config with
        a ``.zoo`` field.
      data: :class:`Dataset` with ``x (n, d_in)`` float32 and ``y (n,)`` int labels.
      progress: show a tqdm bar.
      callback: called with every :class:`EpochOutput`.

    Returns:
      :class:`weightflow_jax.zoo.store.Zoo` with ``path=None``.
    """
    config = _zoo_cfg(config)
    return _train(config, data, progress=progress, partial=None, callback=callback)


def build_zoo(config: ml_collections.ConfigDict, *, data: Dataset | None = None,
              overwrite: bool = False, progress: bool = True, resume: bool = True,
              callback: Callable[[EpochOutput], None] | None = None) -> str:
    """Returns the path of a completed zoo for ``config``, building it if needed.

    * ``config.dir`` holds a completed zoo with the same config fingerprint (and, when
      ``data`` is given, the same data hash): it is reused as is.
    * it holds another zoo: ``ValueError`` unless ``overwrite`` (then it is rebuilt and
      replaced atomically).
    * an interrupted build of the same config left ``.<name>.partial/``: it is resumed
      (``resume=False`` restarts from scratch).

    Args:
      config: zoo config, or any config with a ``.zoo`` field.
      data: train/test arrays; default: :func:`load_data` (``config.dataset``).
      overwrite: replace a zoo built from another config.
      progress: tqdm progress bar.
      resume: continue an interrupted build of the same config.
      callback: called with every :class:`EpochOutput` after it is saved (tests use it to
        interrupt a build).

    Returns:
      Absolute path of the zoo directory.
    """
    config = _zoo_cfg(config)
    if not str(config.dir):
        raise ValueError("zoo config has an empty dir; set --config.zoo.dir=/path/to/zoo")
    path = os.path.abspath(os.path.expanduser(str(config.dir)))
    fingerprint = store.config_fingerprint(config)
    if os.path.exists(path):
        try:
            meta = store.load_meta(path)
        except ValueError:
            meta = None
        same = meta is not None and meta.get("config_fingerprint") == fingerprint
        if same and data is not None:
            same = meta.get("data_sha256") == store.data_fingerprint(
                *trainer.check_data(config, data))
        if same:
            # A build killed between publishing the zoo and cleaning up leaves this behind.
            shutil.rmtree(store.partial_dir(path), ignore_errors=True)
            return path
        if not overwrite:
            what = "a zoo built from another config or data" if meta else "something else"
            raise ValueError(
                f"{path} holds {what}; pass overwrite=True (make_zoo --overwrite) to replace "
                "it, or choose another --config.zoo.dir")
    if data is None:
        data = load_data(config)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(os.path.join(parent, f".{os.path.basename(path)}.tmp-*")):
        shutil.rmtree(stale, ignore_errors=True)
    partial = store.partial_dir(path)
    fp_file = os.path.join(partial, "fingerprint.json")
    marker = {"config_fingerprint": fingerprint,
              "data_sha256": store.data_fingerprint(*trainer.check_data(config, data))}
    if os.path.isdir(partial):
        try:
            with open(fp_file) as f:
                ok = json.load(f) == marker
        except (OSError, json.JSONDecodeError):
            ok = False
        if not (ok and resume):
            shutil.rmtree(partial)
    os.makedirs(partial, exist_ok=True)
    if not os.path.exists(fp_file):
        store.atomic_write_json(fp_file, marker)
    zoo = _train(config, data, progress=progress, partial=partial, callback=callback)
    store.write_zoo(path, zoo, overwrite=True)
    shutil.rmtree(partial, ignore_errors=True)
    return path
