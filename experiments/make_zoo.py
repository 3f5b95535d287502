"""Builds (or reuses) the weight zoo of a config.

Usage::

    python -m experiments.make_zoo --config=configs/mnist_zoo.py:cpu \\
        [--config.zoo.num_runs=8] [--config.zoo.dir=/tmp/zoo] [--overwrite]

Accepts any config with a ``.zoo`` field (the zoo configs and the flow-training configs).
Prints the zoo path and a summary of its snapshots' accuracy. An interrupted build resumes
when rerun with the same config.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from weightflow_jax import zoo

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file with a .zoo field.",
                                          lock_config=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace a zoo at config.zoo.dir built from another config.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None or "zoo" not in config:
        raise app.UsageError("--config must name a config file with a .zoo field, e.g. "
                             "--config=configs/mnist_zoo.py:cpu")
    path = zoo.build_zoo(config.zoo, overwrite=_OVERWRITE.value, progress=_PROGRESS.value)
    meta = zoo.load_meta(path)
    final, every = meta["summary"]["final"], meta["summary"]["all"]
    print(f"zoo: {path}")
    print(f"  {meta['task']} {meta['arch']}: {meta['num_runs']} runs, {meta['num_snapshots']} "
          f"snapshots ({meta['snapshots_per_run']} per run), built in "
          f"{meta['build_seconds']:.0f} s")
    for name, s in (("final snapshots", final), ("all snapshots", every)):
        print(f"  {name}: test acc {s['test_acc']['mean']:.4f} +- {s['test_acc']['std']:.4f}, "
              f"test loss {s['test_loss']['mean']:.4f} +- {s['test_loss']['std']:.4f}, "
              f"train acc {s['train_acc']['mean']:.4f}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
