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
  sinkhorn), ``pair_alignment`` (none | weight_matching: each coupled target's hidden
  neurons permuted to match its prior draw, :mod:`weightflow_jax.flows.pair_alignment`),
  ``sinkhorn_epsilon`` (relative to the cost's std), ``parameterization``
  (target = x1-prediction | velocity), ``time_distribution`` (beta | uniform), ``time_a``,
  ``time_b``, ``prior_std``, ``condition`` (none | train_loss | train_acc: condition the
  field on each snapshot's recorded *training-split* metric, G.pt-style;
  :mod:`weightflow_jax.models.conditioning`), ``condition_dropout`` (fraction of training
  conditions replaced by the null condition, for classifier-free guidance),
  ``condition_balance`` (in [0, 1]: a conditioned flow draws a training network of a
  condition bin holding n networks with probability ∝ n^-balance, 16 bins over the zoo's
  p05-p95 of log-loss; 0 = uniform, 1 = every bin equally often; the conditionals stay the
  same, rare prompts get more training, :meth:`weightflow_jax.models.Conditioner.sampling_probs`),
  ``template_iters`` (alignment reference: 0 = run 0's final network, as the thesis; K > 0 =
  an iterated template, the mean of the runs' final networks after K rounds of aligning
  them to it, :func:`weightflow_jax.zoo.preprocessing.alignment_template`), ``align_scope``
  (snapshot = every snapshot weight-matched on its own, as the thesis; run = every snapshot
  permuted like its run's final network, so training trajectories stay continuous),
  ``prior`` (gaussian = ``N(0, prior_std^2)`` entries, projected onto the spheres by the
  geometric flow only, as the thesis; spheres = the normalized flow starts from that
  projection too, rows of the data's norm 1), ``loss_weighting`` (point = a leaf's squared
  error per data-manifold point, one sphere = one point, for every flow; entry = per entry
  of the normalized flow's flat path, the weighting before the fix; the other flows are
  the same either way; :func:`weightflow_jax.flows.cfm_loss`).
* ``model``: ``name`` of the vector field (``rt`` = the thesis's relational transformer over
  the full neural graph, ``compact_rt`` = the same layers on the compact graph without
  input-neuron nodes, ``neuron_transformer`` = a wide transformer over hidden-neuron tokens,
  equivariant and the one to sample other hidden widths on a CPU, ``mlp`` = residual MLP
  over the flattened coordinates; see :mod:`weightflow_jax.models`) and one block of
  settings per field, ``model.rt``, ``model.compact_rt``, ``model.neuron_transformer``,
  ``model.mlp`` (documented in each field's module); only the named
  field's block is used, e.g. ``--config.model.name=compact_rt --config.model.compact_rt.width=32``.
* ``train``: ``steps``, ``batch_size`` (global), ``learning_rate``, ``warmup_steps``,
  ``schedule`` (constant | cosine: warm-up then constant, or cosine decay to
  ``min_lr_ratio * learning_rate`` at ``steps``), ``ema_decay`` (EMA of the parameters used
  for sampling and evaluation; 0 = off), ``grad_clip``, ``weight_decay``,
  ``checkpoint_every``, ``log_every``.
* ``sample``: ``num`` networks, ``steps`` (Euler), ``guidance`` (lambda; 0 = off; ``lambda *
  dt`` is the learning rate of the gradient step on the network per Euler step),
  ``guidance_batch`` (task examples per guidance step), ``chunk`` (networks per call),
  ``guidance_mode`` (balanced | coords), ``guidance_schedule`` (constant | late),
  ``flow_velocity`` (auto | conditional | displacement; auto = displacement when guided),
  ``output_scale`` (auto | flow | learn | a number; auto = flow on the flow's own task, else
  learn when guided and 1.0 when not), ``representative`` (balanced | exact: the form the
  sampled networks are written in); see ``weightflow_jax.sampling``; ``condition`` (a
  conditioned flow's prompt: final | best | p05 | p50 | p95 | a number | none) and
  ``condition_weight`` (classifier-free guidance weight; 1 = the conditional field);
  ``solver`` (euler | midpoint: 2nd-order exp-map steps, two field evaluations per step).
* ``eval``: ``ensemble_sizes`` for the posterior-predictive curve.
* ``workdir``: default ``runs/<name>_<size>`` when empty.
"""

from __future__ import annotations

import ml_collections

from weightflow_jax.models import default_model_config
from weightflow_jax.zoo import zoo_config

SIZES = ("default", "cpu", "test")
# The field and training length of the ``cpu`` size (chosen by experiments/bench_learning.py,
# docs/LEARNING.md).
CPU_MODEL = "mlp"
CPU_STEPS = {"breast_cancer": 3000, "mnist": 10_000}


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
        kind=flow, align=True, canonical_mode="exact", coupling="exact", pair_alignment="none",
        sinkhorn_epsilon=0.05, parameterization="target", time_distribution="beta",
        time_a=1.0, time_b=2.0, prior_std=0.1, condition="none", condition_dropout=0.1,
        condition_balance=0.0,
        template_iters=0, align_scope="snapshot", prior="gaussian", loss_weighting="point"))
    # Thesis size: the thesis's RT (5 layers, width 32 MNIST / 64 breast cancer), no EMA.
    c.model = default_model_config("rt")
    c.model.rt.update(dict(num_layers=5, width=32 if mnist else 64, num_heads=4))
    c.train = ml_collections.ConfigDict(dict(
        steps=100_000 if mnist else 50_000, batch_size=8 if mnist else 32,
        learning_rate=1e-3, warmup_steps=1000, schedule="constant", min_lr_ratio=0.0,
        ema_decay=0.0, grad_clip=1.0, weight_decay=0.0, checkpoint_every=5000,
        log_every=100))
    c.sample = ml_collections.ConfigDict(dict(
        num=100, steps=512, guidance=0.0, guidance_batch=256, chunk=50,
        guidance_mode="balanced", guidance_schedule="constant", flow_velocity="auto",
        output_scale="auto", representative="balanced", condition="final",
        condition_weight=1.0, solver="euler"))
    c.eval = ml_collections.ConfigDict(dict(ensemble_sizes=(1, 2, 4, 8, 16, 32, 64)))
    if size == "cpu":
        c.model.name = CPU_MODEL
        c.model.rt.update(dict(num_layers=2, width=16, num_heads=2))
        c.train.update(dict(
            steps=CPU_STEPS[task], batch_size=32, warmup_steps=200, schedule="cosine",
            ema_decay=0.999, checkpoint_every=1000, log_every=100))
        # Breast-cancer nets sample in seconds: 256 Euler steps (measured on a 3,000-step
        # flow: 16/64/256 steps -> 0.901/0.925/0.944 mean accuracy); MNIST keeps 64.
        c.sample.update(dict(num=32, steps=64 if mnist else 256, chunk=32))
        c.eval.ensemble_sizes = (1, 2, 4, 8, 16, 32)
        # The normalized flow starts from the geometric flow's prior (its Gaussian draws put
        # on the spheres; the path stays the straight line): MNIST, 300 s, one run,
        # docs/learning/mnist_normalized_loss_weighting.md: 0.931 +- 0.023 vs 0.922 +- 0.044.
        if flow == "normalized":
            c.flow.prior = "spheres"
    elif size == "test":
        c.model.name = CPU_MODEL
        c.model.rt.update(dict(num_layers=1, width=8, num_heads=2, time_features=8))
        c.model.compact_rt.update(dict(num_layers=1, width=8, num_heads=2, time_features=8))
        c.model.mlp.update(dict(width=16, num_blocks=1, time_features=8))
        c.model.neuron_transformer.update(dict(num_layers=1, width=16, num_heads=2,
                                               time_features=8))
        c.train.ema_decay = 0.9
        c.train.update(dict(steps=6, batch_size=4, warmup_steps=1, checkpoint_every=3,
                            log_every=2))
        c.sample.update(dict(num=4, steps=4, chunk=4, guidance_batch=16))
        c.eval.ensemble_sizes = (1, 2, 4)
    c.lock()
    return c
