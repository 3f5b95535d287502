"""mnist geometric flow (MLP 784-10-10).

Run::

    python -m experiments.train --config=configs/mnist_geometric.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/mnist_geometric.py         # thesis size (accelerator)

Sizes: thesis size = the thesis's relational transformer (`rt`, 5 layers) and settings, for
an accelerator (not run here); `cpu` = the `mlp` field with EMA and a cosine schedule, chosen
by experiments/bench_learning.py (docs/LEARNING.md); `test` = seconds, for the test-suite.

What it reaches on 2 CPU cores: `cpu` (`mlp`, 10,000 steps, ~17 min of
training): in docs/LEARNING.md's side-by-side run its samples reached 0.878 ± 0.076 test
accuracy after 150 s of training (thesis 0.786 ± 0.064) and 0.915 ± 0.029 (loss 0.314,
ensemble 0.957) after 900 s (zoo 0.935 ± 0.006); this exact config was not run end to end.

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
--config.model.name=compact_rt (fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("mnist", "geometric", arg)
