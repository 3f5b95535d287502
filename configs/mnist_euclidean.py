"""mnist euclidean flow (MLP 784-10-10).

Run::

    python -m experiments.train --config=configs/mnist_euclidean.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/mnist_euclidean.py         # thesis size (accelerator)

Sizes: thesis size = the thesis's relational transformer (`rt`, 5 layers) and settings, for
an accelerator (not run here); `cpu` = the `mlp` field with EMA and a cosine schedule, chosen
by experiments/bench_learning.py (docs/LEARNING.md); `test` = seconds, for the test-suite.

What it reaches on 2 CPU cores: `cpu` has the geometric config's field and recipe. In
results/mnist.md (6,000 steps, 64 samples) aligned: 0.910 ± 0.046 (loss 0.315), aligned +
OT: 0.914 ± 0.045 (loss 0.302); thesis 0.737 / 0.757.

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
--config.model.name=compact_rt (fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("mnist", "euclidean", arg)
