"""breast cancer euclidean flow (MLP 30-16-16-2).

Run::

    python -m experiments.train --config=configs/breast_cancer_euclidean.py:cpu     # minutes on 2 CPU cores
    python -m experiments.train --config=configs/breast_cancer_euclidean.py         # thesis size (accelerator)

Override any field, e.g. --config.flow.coupling=independent --config.train.steps=2000
(fields: configs/common.py).
"""

from configs.common import get_base_config


def get_config(arg: str = ""):
    return get_base_config("breast_cancer", "euclidean", arg)
