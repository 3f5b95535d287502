"""MNIST 784-10-10 weight zoo (thesis: 50 SGD runs x 25 epochs, snapshot every 10 iterations).

Build::

    python -m experiments.make_zoo --config=configs/mnist_zoo.py        # thesis size (~3 GB)
    python -m experiments.make_zoo --config=configs/mnist_zoo.py:cpu    # 50 runs x 25 epochs, a snapshot every 50 iterations

Snapshots should reach about 0.93 test accuracy (thesis: 0.933 +- 0.009).
"""

import ml_collections

from weightflow_jax.zoo.presets import zoo_config


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    """``arg``: ``default`` (thesis size), ``cpu`` or ``test`` (see zoo presets)."""
    config = ml_collections.ConfigDict()
    config.zoo = zoo_config("mnist", arg or "default")
    config.lock()
    return config
