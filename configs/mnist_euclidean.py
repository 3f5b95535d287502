"""mnist euclidean flow (MLP 784-10-10).

Run::

    python -m experiments.train --config=configs/mnist_euclidean.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/mnist_euclidean.py         # thesis size (accelerator)

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
(fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("mnist", "euclidean", arg)
