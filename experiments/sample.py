"""Samples networks from a trained flow and evaluates them.

    python -m experiments.sample --workdir=runs/mnist_geometric_cpu --num=100 --steps=512
    python -m experiments.sample --workdir=RUN --task=fashion_mnist --guidance=200 \
        --steps=1024 --guidance_batch=1024
    python -m experiments.sample --workdir=RUN --arch=784-32-10
    python -m experiments.sample --workdir=RUN --condition=best --condition_weight=1.5

Writes ``<out>.npz`` (plain weights ``W0, b0, W1, b1, ...``, ``W{i}`` shaped ``(n, out, in)``,
loadable with numpy alone, and ``representative``: the form they are in) and ``<out>.json``
(test accuracy/loss, posterior-predictive curve, diversity, the sampling options). ``--out``
defaults to ``<workdir>/samples_<arch>_<task>[_g<lambda>]``.

Networks come out *balanced* by default (``--representative=balanced``: per hidden neuron the
incoming weights and bias have the norm of the outgoing weights; the same function as the
flow's ``exact`` decoding, a much better start for training). Guidance (``--guidance=lambda``)
trains the network it carries on the task's training split; ``lambda * dt`` is the learning
rate per Euler step (see ``weightflow_jax.sampling.guidance``). Flags left at ``auto`` take
the run's ``config.sample`` values, whose ``auto`` means: no pull back to the flow's endpoint
when guided (``--flow_velocity=displacement``), and on a task other than the flow's own an
output scale set by the guidance (``--output_scale=learn``) or, unguided, reset to a unit
last-layer norm (``1.0``).
"""

import json
import os

from absl import app, flags, logging

from weightflow_jax import mlp, pipeline

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of a trained flow.")
_NUM = flags.DEFINE_integer("num", 100, "Number of networks to sample.")
_STEPS = flags.DEFINE_integer("steps", 512, "Euler steps (initial steps for adaptive solvers).")
_SOLVER = flags.DEFINE_string("solver", "euler", "euler | midpoint (2nd order, every flow) | tsit5 | dopri5 | bosh3 | heun (flat flows).")
_GUIDANCE = flags.DEFINE_float("guidance", 0.0, "Task-loss guidance lambda (0 = off).")
_GUIDANCE_BATCH = flags.DEFINE_integer("guidance_batch", 256, "Examples per guidance step.")
_TASK = flags.DEFINE_string("task", "", "Evaluation/guidance task (default: the flow's).")
_ARCH = flags.DEFINE_string("arch", "", "Sample another hidden architecture, e.g. 784-32-10.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_CHUNK = flags.DEFINE_integer("chunk", 50, "Networks integrated at once.")
_OUT = flags.DEFINE_string("out", "", "Output path prefix (without .npz/.json).")
_REPR = flags.DEFINE_enum("representative", "auto", ["auto", "balanced", "exact"],
                          "Form of the written networks (auto: the run's config.sample).")
_MODE = flags.DEFINE_enum("guidance_mode", "auto", ["auto", "balanced", "coords"],
                          "Guidance direction (balanced: a gradient step on the balanced "
                          "network; coords: the gradient in the flow's coordinates).")
_SCHEDULE = flags.DEFINE_enum("guidance_schedule", "auto", ["auto", "constant", "late"],
                              "lambda(t): constant, or late (2t).")
_FLOW_VELOCITY = flags.DEFINE_enum("flow_velocity", "auto",
                                   ["auto", "conditional", "displacement"],
                                   "The flow's velocity (displacement: no pull back to the "
                                   "field's endpoint; auto: displacement when guided).")
_OUTPUT_SCALE = flags.DEFINE_string("output_scale", "auto",
                                    "Last-layer norm: auto | flow | learn | a number.")
_CONDITION = flags.DEFINE_string(
    "condition", "auto", "A conditioned flow's prompt (its training-split metric, e.g. the "
    "train loss): final (the zoo's final snapshots' mean) | best | p05 | p50 | p95 | a number "
    "| none (unconditional); auto: the run's config.sample.condition.")
_CONDITION_WEIGHT = flags.DEFINE_float(
    "condition_weight", None, "Classifier-free guidance weight w: null + w (cond - null); "
    "1 = the conditional field (default: the run's config.sample.condition_weight).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        run = pipeline.load_flow(_WORKDIR.value)
        space = pipeline.flow_space_for(run, _ARCH.value or None)
    except ValueError as err:  # bad workdir / architecture: the message says what to do
        raise SystemExit(f"error: {err}") from None
    task = _TASK.value or str(run.config.zoo.dataset)
    out = _OUT.value or os.path.join(
        _WORKDIR.value, f"samples_{mlp.format_arch(space.sizes)}_{task}"
        + (f"_g{_GUIDANCE.value:g}" if _GUIDANCE.value else ""))
    def flag(f):
        return None if f.value == "auto" else f.value

    options = pipeline.sampling_options(
        run.config.sample, representative=flag(_REPR), guidance_mode=flag(_MODE),
        guidance_schedule=flag(_SCHEDULE), flow_velocity=flag(_FLOW_VELOCITY),
        output_scale=flag(_OUTPUT_SCALE), condition=flag(_CONDITION),
        condition_weight=_CONDITION_WEIGHT.value)
    if run.conditioner is None and (flag(_CONDITION) not in (None, "none")
                                    or _CONDITION_WEIGHT.value is not None):
        raise SystemExit("error: this flow was trained without a condition "
                         "(flow.condition='none'); drop --condition/--condition_weight")
    try:
        result = pipeline.sample_and_evaluate(
            run, out, num=_NUM.value, steps=_STEPS.value, seed=_SEED.value,
            arch=_ARCH.value or None, task=task, guidance=_GUIDANCE.value,
            guidance_batch=_GUIDANCE_BATCH.value, solver=_SOLVER.value, chunk=_CHUNK.value,
            options=options)
    except ValueError as err:  # bad option values: the message names the valid ones
        raise SystemExit(f"error: {err}") from None
    ev = result["samples"]
    print(json.dumps({k: v for k, v in ev.items() if k not in ("acc", "loss")}, indent=2))
    if result.get("condition_info"):
        c = result["condition_info"]
        print(f"condition {c['kind']} = {c['value']} (prompt {c['prompt']}), weight "
              f"{c['weight']:g}")
    print(f"wrote {out}.npz ({result['representative']} form) and {out}.json")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
