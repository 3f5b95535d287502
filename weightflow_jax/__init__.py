"""weightflow_jax: generative flow models over neural-network weights.

Submodules are imported lazily so that ``import weightflow_jax`` stays quick:
``weightflow_jax.geometry``, ``.mlp``, ``.symmetry``, ``.data``, ``.zoo``, ``.graphs``,
``.models``, ``.flows``, ``.train``, ``.evaluation``.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "geometry", "mlp", "symmetry", "data", "zoo", "graphs", "models", "flows", "train",
    "sampling", "evaluation", "pipeline",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
