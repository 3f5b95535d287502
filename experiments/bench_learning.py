"""Benchmark: time to quality of the vector fields, side by side in one run.

The command line of :mod:`weightflow_jax.benchmarks.learning` (what it measures, the variant
syntax and the outputs are described there): flags -> :class:`~weightflow_jax.benchmarks.
learning.Settings` -> :func:`~weightflow_jax.benchmarks.learning.run`.

Commands that produced ``docs/learning/`` (2 CPU cores)::

    python -m experiments.bench_learning --task breast_cancer --budget 120 --eval_every 20
    python -m experiments.bench_learning --task mnist --budget 900 --eval_every 150 \\
        --variant "mlp|model.name=mlp" --variant "compact_rt|model.name=compact_rt"
    python -m experiments.bench_learning --throughput --task mnist

A variant is ``"label|key=value|key=value"``: a label and dotted config overrides; the key
``budget`` sets that variant's own training seconds (default ``--budget``).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from weightflow_jax import flows
from weightflow_jax.benchmarks import learning


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="breast_cancer", choices=("breast_cancer", "mnist"))
    p.add_argument("--flow", default="geometric", choices=flows.FLOWS)
    p.add_argument("--size", default="cpu", help="config size the variants start from")
    p.add_argument("--variant", action="append", default=None,
                   help='"label|key=value|..." (repeatable); default: mlp, compact_rt, rt')
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per variant")
    p.add_argument("--eval_every", type=float, default=20.0, help="training seconds between "
                   "evaluations")
    p.add_argument("--num", type=int, default=32, help="networks sampled per evaluation")
    p.add_argument("--sample_steps", type=int, default=0,
                   help="Euler steps per sample (0: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoo_dir", default="", help="zoo directory (default: the config's)")
    p.add_argument("--novelty", action=argparse.BooleanOptionalAction, default=True,
                   help="nearest-checkpoint distance of the last samples vs checkpoint spacing")
    p.add_argument("--out", default="", help="output prefix (default docs/learning/<task>_<flow>)")
    p.add_argument("--transfer_arch", default="",
                   help="also sample and evaluate this hidden architecture (e.g. 784-32-10) "
                   "at every evaluation, for the fields that can (equivariant ones)")
    p.add_argument("--save_runs", default="",
                   help="save each variant's final state as a flow run in <dir>/<label> "
                   "(config.json, field_stats.npz, checkpoint) for experiments.sample")
    p.add_argument("--zoo_size", default="", help="zoo preset instead of the config's zoo "
                   "(wide: snapshots without burn-in, for loss conditioning)")
    p.add_argument("--prompts", type=int, default=0,
                   help="conditioned variants: prompt this many training losses (zoo's "
                   "5th-95th percentile) at the last evaluation and report R^2")
    p.add_argument("--throughput", action="store_true", help="train-step throughput mode")
    p.add_argument("--batch", type=int, default=8, help="--throughput: networks per step")
    p.add_argument("--steps", type=int, default=5, help="--throughput: timed steps")
    return p.parse_args(argv)


def command_line() -> str:
    """This run's command, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", "-m", "experiments.bench_learning"] + sys.argv[1:])


def main(argv=None) -> None:
    settings = learning.Settings(**vars(parse_args(argv)), command=command_line())
    try:
        learning.run(settings)
    except FileExistsError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
