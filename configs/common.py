"""Shared builder of the flow-training configs (one file per experiment calls it).

Every experiment config is ``get_config(arg)`` returning a locked
:class:`ml_collections.ConfigDict`; ``arg`` picks the size:

* ``""``/``default``: thesis-sized, for an accelerator (zoo as in the thesis, 5 RT layers,
  100k steps, 512 Euler steps);
* ``cpu``: finishes in minutes on a 2-core CPU (smaller zoo and model, a few hundred steps);
* ``test``: seconds, for the test-suite.

Fields (override any from the command line, e.g. ``--config.train.steps=500``):

* ``task``: data set of the zoo (``breast_cancer``, ``mnist``); ``seed``: everything random.
* ``zoo``: the zoo preset (:func:`weightflow_jax.zoo.zoo_config`).
* ``flow``: ``kind`` (euclidean | normalized | geometric), ``align`` (weight-matching to a
  reference), ``canonical_mode`` (exact | thesis), ``coupling`` (independent | exact |
  sinkhorn), ``sinkhorn_epsilon`` (relative to the cost's std), ``parameterization``
  (target = x1-prediction | velocity), ``time_distribution`` (beta | uniform), ``time_a``,
  ``time_b``, ``prior_std``.
* ``model``: relational transformer ``num_layers``, ``width``, ``num_heads``, ``mlp_ratio``,
  ``attention`` (sparse | dense), ``time_features``.
* ``train``: ``steps``, ``batch_size`` (global), ``learning_rate``, ``warmup_steps``,
  ``grad_clip``, ``weight_decay``, ``checkpoint_every``, ``log_every``.
* ``sample``: ``num`` networks, ``steps`` (Euler), ``guidance`` (lambda; 0 = off),
  ``guidance_batch`` (task examples per guidance step), ``chunk`` (networks per call).
* ``eval``: ``ensemble_sizes`` for the posterior-predictive curve.
* ``workdir``: default ``runs/<name>_<size>`` when empty.
"""

from __future__ import annotations

import ml_collections

from weightflow_jax.zoo import zoo_config

SIZES = ("default", "cpu", "test")


def get_base_config(task: str, flow: str, arg: str = "") -> ml_collections.ConfigDict:
    """The config of ``task`` x ``flow`` at size ``arg`` (see the module docstring)."""
    size = arg or "default"
    if size not in SIZES:
        raise ValueError(f"unknown config size {size!r}; choose one of {SIZES}")
    mnist = task == "mnist"
    c = ml_collections.ConfigDict()
    c.name = f"{task}_{flow}"
    c.size = size
    c.task = task
    c.seed = 0
    c.workdir = ""
    c.zoo = zoo_config(task, size)
    c.flow = ml_collections.ConfigDict(dict(
        kind=flow, align=True, canonical_mode="exact", coupling="exact",
        sinkhorn_epsilon=0.05, parameterization="target", time_distribution="beta",
        time_a=1.0, time_b=2.0, prior_std=0.1))
    c.model = ml_collections.ConfigDict(dict(
        num_layers=5, width=32 if mnist else 64, num_heads=4, mlp_ratio=2,
        attention="sparse", time_features=64))
    c.train = ml_collections.ConfigDict(dict(
        steps=100_000 if mnist else 50_000, batch_size=8 if mnist else 32,
        learning_rate=1e-3, warmup_steps=1000, grad_clip=1.0, weight_decay=0.0,
        checkpoint_every=5000, log_every=100))
    c.sample = ml_collections.ConfigDict(dict(
        num=100, steps=512, guidance=0.0, guidance_batch=256, chunk=50))
    c.eval = ml_collections.ConfigDict(dict(ensemble_sizes=(1, 2, 4, 8, 16, 32, 64)))
    if size == "cpu":
        c.model.update(dict(num_layers=2, width=16, num_heads=2))
        c.train.update(dict(steps=400 if mnist else 3000, warmup_steps=50,
                            checkpoint_every=500, log_every=20))
        # Breast-cancer nets sample in seconds: 256 Euler steps (measured on a 3,000-step
        # flow: 16/64/256 steps -> 0.901/0.925/0.944 mean accuracy); MNIST keeps 64.
        c.sample.update(dict(num=32, steps=64 if mnist else 256, chunk=32))
        c.eval.ensemble_sizes = (1, 2, 4, 8, 16, 32)
    elif size == "test":
        c.model.update(dict(num_layers=1, width=8, num_heads=2, time_features=8))
        c.train.update(dict(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=3,
                            log_every=2))
        c.sample.update(dict(num=4, steps=4, chunk=4, guidance_batch=16))
        c.eval.ensemble_sizes = (1, 2, 4)
    c.lock()
    return c
