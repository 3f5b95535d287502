"""Trains a flow over MLP weights, then samples and evaluates it.

    python -m experiments.train --config=configs/mnist_geometric.py:cpu
    python -m experiments.train --config=configs/mnist_geometric.py --workdir=runs/mnist_geo \
        --config.flow.coupling=independent --config.train.steps=200000

Builds (or reuses) the zoo, trains with automatic resume from the workdir, and writes
``samples.npz``, ``eval.json`` and ``report.md`` there. See ``configs/common.py`` for fields.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from weightflow_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/mnist_geometric.py:cpu.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<name>_<size>).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every save/restore at INFO
    result = pipeline.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
    print(open(f"{result['workdir']}/report.md").read())


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
