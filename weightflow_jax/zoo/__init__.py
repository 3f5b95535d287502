"""Weight zoos: many MLPs trained at once, their snapshots stored on disk.

Build one with ``python -m experiments.make_zoo --config=configs/mnist_zoo.py:cpu`` or
:func:`build_zoo`; read it with :func:`load_zoo`; align/canonicalize it with
:func:`preprocess`. Training (:mod:`.trainer`) vmaps one SGD/Adam step over all networks and
scans it over an epoch; presets (:mod:`.presets`) reproduce the thesis's two zoos.

On-disk format (version 1)
--------------------------
A zoo is a directory::

    <zoo>/
      meta.json      metadata; {"format": "weightflow_jax.zoo", "version": 1,
                     "completed": true, ...}
      weights.npz    W0, b0, W1, b1, ...: float32, W_l (N, out, in), b_l (N, out);
                     run_id (N,) int32, step (N,) int64 (updates done), epoch (N,) int32
      metrics.npz    train_loss, train_acc, test_loss, test_acc (N,) float32 per snapshot;
                     epoch_train_loss (num_epochs, num_runs) float32
      preprocessed/  cache of :func:`preprocess` (one .npz per mode + reference)

``N`` snapshots are stored run-major (all of run 0 by increasing step, then run 1, ...).
``W`` is ``(out, in)`` as everywhere in the package (:mod:`weightflow_jax.mlp`).

``meta.json`` fields: ``task``, ``dataset``, ``arch`` ("784-10-10"), ``layer_sizes``,
``num_params``, ``num_runs``, ``num_snapshots``, ``snapshots_per_run``, ``steps_per_epoch``,
``num_epochs``, ``burn_in_epochs``, ``snapshot_every``, ``early_snapshot_every``,
``early_snapshot_steps``, ``batch_size``, ``same_batch_order``,
``seed``, ``optimizer`` and ``init`` (dicts), ``n_train``, ``n_test``, ``n_eval_train``,
``n_eval_test`` (examples used to score snapshots), ``config`` (the whole zoo config),
``config_fingerprint`` (sha256 of the content-relevant config, used to reuse a zoo),
``data_sha256``, ``summary`` (mean/std/min/max of each metric over the final snapshot of
each run and over all snapshots), ``build_seconds``, ``created``, ``jax_version``,
``devices``, and ``format``/``version``/``completed``.

Atomicity: a zoo is assembled in ``.<name>.tmp-<uuid>/`` next to the target and renamed
onto it, so ``<zoo>/`` exists only when complete; :func:`load_zoo` also refuses a directory
without ``completed: true`` or with another version. While training, resume files live in
``.<name>.partial/`` (see :mod:`.build`); rerunning the same build resumes from there.
"""

from weightflow_jax.zoo.build import build_zoo, load_data, train_zoo
from weightflow_jax.zoo.presets import default_zoo_root, zoo_config
from weightflow_jax.zoo.preprocessing import (
    ALIGN_SCOPES,
    Preprocessed,
    barrier_report,
    loss_barrier,
    preprocess,
    run_permutations,
)
from weightflow_jax.zoo.store import (
    FORMAT,
    FORMAT_VERSION,
    Zoo,
    is_complete,
    load_meta,
    load_zoo,
    write_zoo,
)
from weightflow_jax.zoo.trainer import Dataset, evaluate

__all__ = [
    "build_zoo", "train_zoo", "load_data", "zoo_config", "default_zoo_root", "preprocess",
    "Preprocessed", "ALIGN_SCOPES", "run_permutations", "loss_barrier", "barrier_report", "FORMAT", "FORMAT_VERSION", "Zoo",
    "load_zoo", "load_meta", "is_complete", "write_zoo", "Dataset", "evaluate",
]
