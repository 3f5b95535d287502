"""breast cancer normalized flow (MLP 30-16-16-2).

Run::

    python -m experiments.train --config=configs/breast_cancer_normalized.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/breast_cancer_normalized.py         # thesis size (accelerator)

Sizes: thesis size = the thesis's relational transformer (`rt`, 5 layers) and settings, for
an accelerator (not run here); `cpu` = the `mlp` field with EMA and a cosine schedule, chosen
by experiments/bench_learning.py (docs/LEARNING.md); `test` = seconds, for the test-suite.

What it reaches on 2 CPU cores: `cpu` has the geometric config's field and recipe, and starts
from the geometric flow's prior (flow.prior=spheres). In results/breast_cancer.md (3,000
steps, ~70 s of training) plain / aligned / aligned + OT: 0.978 / 0.974 / 0.976 (loss
0.066 / 0.075 / 0.070); the zoo's final snapshots 0.977, loss 0.060.

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
--config.model.name=compact_rt (fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("breast_cancer", "normalized", arg)
