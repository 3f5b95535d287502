"""breast cancer geometric flow (MLP 30-16-16-2).

Run::

    python -m experiments.train --config=configs/breast_cancer_geometric.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/breast_cancer_geometric.py         # thesis size (accelerator)

Sizes: thesis size = the thesis's relational transformer (`rt`, 5 layers) and settings, for
an accelerator (not run here); `cpu` = the `mlp` field with EMA and a cosine schedule, chosen
by experiments/bench_learning.py (docs/LEARNING.md); `test` = seconds, for the test-suite.

What it reaches on 2 CPU cores: `cpu` (`mlp`, 3,000 steps): in
docs/LEARNING.md's side-by-side run its samples reached 0.967 ± 0.017 test accuracy after
20 s of training and 0.967 ± 0.026 (loss 0.086, ensemble 0.982) after 92 s (zoo's final
snapshots 0.980 ± 0.013, loss 0.051); the whole command takes ~2 minutes (README).

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
--config.model.name=compact_rt (fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("breast_cancer", "geometric", arg)
