"""Preset zoo configurations (the thesis's two weight datasets and small CPU variants).

:func:`zoo_config` returns a locked :class:`ml_collections.ConfigDict`; experiment configs
embed it as ``config.zoo`` so that ``python -m experiments.make_zoo --config=...`` and the
flow-training command build exactly the same zoo. Fields (all overridable from the
command line, e.g. ``--config.zoo.num_runs=8``):

* ``task`` / ``dataset``: data set name for :func:`weightflow_jax.data.load`. ``dataset``
  may name another split of the task's data: ``--config.zoo.dataset=breast_cancer_thesis``
  trains the breast-cancer zoo on the thesis's split (455 rows; see
  :mod:`weightflow_jax.data.core`). Give such a zoo its own ``--config.zoo.dir``: the
  default directory is named after ``task``, and a zoo of the other split there is refused.
* ``arch``: layer sizes as a string, e.g. ``"784-10-10"``.
* ``num_runs``: independent training runs (networks trained at once).
* ``num_epochs``, ``burn_in_epochs``: epochs trained; the first ``burn_in_epochs`` keep no
  snapshots.
* ``snapshot_every``: iterations between snapshots, counted within each epoch (see
  :mod:`weightflow_jax.zoo.trainer` for the exact schedule).
* ``early_snapshot_every``, ``early_snapshot_steps``: an early-dense window, a snapshot every
  ``early_snapshot_every`` iterations over the run's first ``early_snapshot_steps`` (both 0:
  off; needs ``burn_in_epochs=0``), so that the fast-falling start of training is covered.
* ``batch_size``: minibatch size; the last partial batch of each epoch is dropped (the
  data are reshuffled every epoch, so every example is used).
* ``same_batch_order``: ``False`` (default) gives every network its own shuffling stream;
  ``True`` feeds all networks the same minibatches.
* ``optimizer``: ``name`` (``"sgd"`` or ``"adam"``), ``learning_rate``, ``momentum`` (SGD),
  ``nesterov`` (SGD), ``b1``/``b2`` (Adam), ``weight_decay`` (L2 added to the gradient,
  as in ``torch.optim``).
* ``init``: ``scheme`` ``"normal"`` (weights ~ N(0, ``w_std``^2)) or ``"he"``
  (N(0, 2 / fan_in)); biases ~ N(0, ``b_std``^2) (0 = zero biases).
* ``eval``: ``train_size`` / ``test_size`` examples used to score every snapshot
  (0 = the whole split; the train subset is a fixed random one), ``chunk_size`` snapshots
  evaluated per vmapped call.
* ``data``: ``source`` (``"auto"`` = try every source), ``data_dir`` (``""`` = default
  cache), ``seed`` (split seed for data sets without an official split).
* ``seed``: seed of everything random in the build.
* ``dir``: where the zoo is written; default ``$WEIGHTFLOW_ZOOS/<task>_<size>`` with
  ``$WEIGHTFLOW_ZOOS`` defaulting to ``~/.cache/weightflow_jax/zoos``.
* ``checkpoint_every``: epochs between resume checkpoints of an interrupted build.

Sizes: ``"default"`` (also ``""``/``"thesis"``) is the thesis size; ``"cpu"`` builds in a
few minutes on a 2-core CPU; ``"test"`` is tiny (seconds, for tests).
"""

from __future__ import annotations

import os

import ml_collections

__all__ = ["zoo_config", "TASKS", "SIZES", "ADDED_FIELDS", "default_zoo_root"]

TASKS = ("breast_cancer", "mnist")
SIZES = ("default", "cpu", "test", "wide")
# Fields added after zoos had been built, with the value that means "as before" (a zoo
# config or a flow run's stored config without the field reads as that value).
ADDED_FIELDS = {"early_snapshot_every": 0, "early_snapshot_steps": 0}


def default_zoo_root() -> str:
    """``$WEIGHTFLOW_ZOOS``, else ``~/.cache/weightflow_jax/zoos``."""
    root = os.environ.get("WEIGHTFLOW_ZOOS")
    if root:
        return os.path.expanduser(root)
    return os.path.join(os.path.expanduser("~"), ".cache", "weightflow_jax", "zoos")


def _base(task: str, arch: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = task
    c.dataset = task
    c.arch = arch
    c.num_runs = 1
    c.num_epochs = 1
    c.burn_in_epochs = 0
    c.snapshot_every = 1
    c.update(ADDED_FIELDS)
    c.batch_size = 32
    c.same_batch_order = False
    c.seed = 0
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.1, momentum=0.0, nesterov=False, b1=0.9, b2=0.999,
        weight_decay=0.0))
    c.init = ml_collections.ConfigDict(dict(scheme="normal", w_std=0.1, b_std=0.0))
    c.eval = ml_collections.ConfigDict(dict(train_size=0, test_size=0, chunk_size=128))
    c.data = ml_collections.ConfigDict(dict(source="auto", data_dir="", seed=0))
    c.dir = ""
    c.checkpoint_every = 1
    return c


def zoo_config(task: str, size: str = "default") -> ml_collections.ConfigDict:
    """Zoo configuration for ``task`` at ``size``.

    Args:
      task: ``"breast_cancer"`` (MLP 30-16-16-2, Adam) or ``"mnist"`` (MLP 784-10-10, SGD).
      size: ``"default"``/``"thesis"``/``""`` (thesis size), ``"cpu"``, ``"test"`` or
        ``"wide"`` (no burn-in, for loss conditioning).

    Returns:
      A locked ConfigDict (misspelt fields raise); see the module docstring for fields.

    Thesis sizes (``../shared/REFERENCE.md``):

    * breast cancer: 100 Adam runs (lr 1e-3) x 50 epochs, first 10 dropped, a snapshot
      every 4 iterations; batch 32 (our choice: 456 training rows -> 14 iterations and
      3 snapshots per epoch -> 120 per run, 12,000 in all); He init, zero biases.
    * MNIST: 50 SGD runs (lr 0.1, momentum 0.9, weight decay 1e-5) x 25 epochs, first 5
      dropped, a snapshot every 10 iterations, N(0, 0.1^2) weights, zero biases; batch 128
      (our choice: of 32/64/128/256, 128 comes closest to the thesis's 0.933 test accuracy
      and 0.231 loss — 4 runs x 10 epochs gave 0.905/0.918/0.936/0.934 — on pixels in
      [0, 1]; 468 iterations and 46 snapshots per epoch -> 920 per run, 46,000 in all,
      about 1.5 GB). Snapshots are scored on a fixed 10k subset of the training set.

    ``wide`` (for loss-conditioned flows and prompt alignment): snapshots from the first
    iterations on (no burn-in), so the recorded training losses span the whole run, from a
    barely trained network to a converged one: breast cancer as ``cpu`` without the 10
    burn-in epochs (100 runs x 50 epochs, 15,000 snapshots); MNIST 50 SGD runs x 10 epochs
    without burn-in, a snapshot every 25 iterations (18 per epoch) and every 5 over the first
    150 iterations (where the training loss falls from 2.3 to ~0.38; a regular schedule kept
    6 snapshots per run there): 204 per run, 10,200 in all.

    ``cpu`` sizes: breast cancer as the thesis (100 runs; it builds in ~15 s on a 2-core
    CPU); MNIST the thesis's 50 runs x 25 epochs (first 5 dropped, ~10 minutes on 2 cores)
    with a snapshot every 50 iterations instead of 10 (9 per epoch, 180 per run, 9,000 in
    all: the same runs, a fifth of the snapshots, so alignment, OT and novelty stay cheap).
    """
    if size in ("", "thesis"):
        size = "default"
    if task not in TASKS:
        raise ValueError(f"unknown zoo task {task!r}; known tasks: {', '.join(TASKS)}")
    if size not in SIZES:
        raise ValueError(
            f"unknown zoo size {size!r} for task {task!r}; choose one of "
            f"{', '.join(SIZES)} (or 'thesis', an alias of 'default')")
    if task == "breast_cancer":
        c = _base(task, "30-16-16-2")
        c.batch_size = 32
        c.snapshot_every = 4
        c.optimizer.name = "adam"
        c.optimizer.learning_rate = 1e-3
        c.init.scheme = "he"
        c.init.w_std = 0.0
        c.eval.chunk_size = 1024
        if size == "default":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 100, 50, 10
        elif size == "cpu":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 100, 50, 10
        elif size == "wide":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 100, 50, 0
        else:
            c.num_runs, c.num_epochs, c.burn_in_epochs = 4, 4, 1
    else:
        c = _base(task, "784-10-10")
        c.batch_size = 128
        c.snapshot_every = 10
        c.optimizer.name = "sgd"
        c.optimizer.learning_rate = 0.1
        c.optimizer.momentum = 0.9
        c.optimizer.weight_decay = 1e-5
        c.init.scheme = "normal"
        c.init.w_std = 0.1
        c.eval.train_size = 10_000
        c.eval.chunk_size = 64
        if size == "default":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 50, 25, 5
        elif size == "cpu":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 50, 25, 5
            c.snapshot_every = 50
            c.eval.test_size = 0
        elif size == "wide":
            c.num_runs, c.num_epochs, c.burn_in_epochs = 50, 10, 0
            c.snapshot_every = 25
            c.early_snapshot_every, c.early_snapshot_steps = 5, 150
        else:
            c.num_runs, c.num_epochs, c.burn_in_epochs = 2, 1, 0
            c.snapshot_every = 100
            c.eval.train_size = 1000
            c.eval.test_size = 1000
    c.dir = os.path.join(default_zoo_root(), f"{task}_{size}")
    c.lock()
    return c
