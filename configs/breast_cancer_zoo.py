"""Breast cancer 30-16-16-2 weight zoo (thesis: 100 Adam runs x 50 epochs).

Build::

    python -m experiments.make_zoo --config=configs/breast_cancer_zoo.py        # thesis size
    python -m experiments.make_zoo --config=configs/breast_cancer_zoo.py:cpu    # 100 runs, as the thesis

Snapshots should reach about 0.96-0.99 test accuracy (thesis target networks: 0.992).
"""

import ml_collections

from weightflow_jax.zoo.presets import zoo_config


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    """``arg``: ``default`` (thesis size), ``cpu`` or ``test`` (see zoo presets)."""
    config = ml_collections.ConfigDict()
    config.zoo = zoo_config("breast_cancer", arg or "default")
    config.lock()
    return config
