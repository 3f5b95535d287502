"""Checkpoints (orbax) with automatic resume, and the run's config stored beside them.

Layout of a workdir::

    workdir/
      config.json              the run's config, canonical JSON (written by process 0)
      checkpoints/<step>/      one orbax checkpoint per saved step (item "state")
      metrics.jsonl, events.*  written by MetricWriter

Orbax writes a step into ``<step>.orbax-checkpoint-tmp...`` and renames it once complete, so a
save cut short (killed process, full disk) leaves only a temporary directory, which is never
taken for a checkpoint and is deleted the next time the workdir is opened.

Resuming a workdir that holds a run of another config is refused
(:func:`check_config_compatible`): fields that only change how long or how verbosely the run
goes (``DEFAULT_SAFE_FIELDS``: total steps, logging/checkpoint intervals, ...) may differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from weightflow_jax.zoo import presets as zoo_presets

PyTree = Any

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_ITEM = "state"

# Leaf names (any nesting) or dotted paths of config fields that may change between a run and
# its resumption.
DEFAULT_SAFE_FIELDS = frozenset({
    "num_steps", "num_train_steps", "total_steps", "train_steps",
    "log_every", "log_every_steps", "checkpoint_every", "checkpoint_every_steps",
    "eval_every", "eval_every_steps", "max_to_keep", "keep_checkpoints",
    "progress", "progress_bar", "workdir",
})


# Fields added to the configs after runs were written, with the value that reproduces the
# behaviour before them: a run whose config.json lacks one matches a config holding that value.
# A callable value computes it from the run's other fields (flat ``{"flow.kind": ...}``).
ADDED_FIELD_DEFAULTS: Mapping[str, Any] = {
    **{f"zoo.{k}": v for k, v in zoo_presets.ADDED_FIELDS.items()},
    "flow.template_iters": 0,
    "flow.align_scope": "snapshot",
    "flow.prior": "gaussian",
    "flow.condition_balance": 0.0,
    # Runs trained before the fix weighed the normalized flow's loss per entry; for the
    # other flows both weightings are the same loss.
    "flow.loss_weighting": lambda flat: ("entry" if flat.get("flow.kind") == "normalized"
                                         else "point"),
}


class ConfigMismatchError(ValueError):
    """The workdir holds a run whose config differs from the one given in unsafe fields."""


# --------------------------------------------------------------------------------------------
# Config as canonical JSON
# --------------------------------------------------------------------------------------------

def _to_plain(value: Any) -> Any:
    """Converts a config value into JSON-able Python (dicts, lists, str, numbers, None)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):  # ml_collections ConfigDict
        value = value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_to_plain(v) for v in value), key=repr)
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return str(value)


def config_to_dict(config: Any) -> dict:
    """Returns ``config`` (dict, ``ml_collections.ConfigDict``, dataclass) as a plain dict.

    Tuples become lists, numpy scalars Python numbers, callables their qualified name.
    """
    plain = _to_plain(config)
    if not isinstance(plain, dict):
        raise ValueError(f"config must be a mapping (dict or ml_collections.ConfigDict), got "
                         f"{type(config).__name__}.")
    return plain


def canonical_config_json(config: Any) -> str:
    """The canonical JSON text of ``config``: sorted keys, fixed separators, one line."""
    return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"),
                      allow_nan=True)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flattens nested dicts to ``{"a.b.c": leaf}`` (lists are leaves)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _is_safe(path: str, safe_fields: Iterable[str]) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return any(path == f if "." in f else leaf == f for f in safe_fields)


_MISSING = "<missing>"


def _value(flat: dict, key: str, added_defaults: Mapping[str, Any]) -> Any:
    """``flat[key]``, else the field's added default (computed from ``flat`` if callable),
    else ``"<missing>"``."""
    if key in flat:
        return flat[key]
    fallback = added_defaults.get(key, _MISSING)
    return fallback(flat) if callable(fallback) else fallback


def config_field(config: Any, key: str) -> Any:
    """Field ``key`` (dotted) of ``config``, or, when the config predates it, the value in
    :data:`ADDED_FIELD_DEFAULTS` that reproduces the behaviour before it.

    Raises:
      KeyError: ``key`` is neither in ``config`` nor an added field.
    """
    flat = _flatten(config_to_dict(config))
    if key not in flat and key not in ADDED_FIELD_DEFAULTS:
        raise KeyError(f"config has no field {key!r} and it is not one of the fields added "
                       "later (train.checkpoint.ADDED_FIELD_DEFAULTS)")
    return _value(flat, key, ADDED_FIELD_DEFAULTS)


def config_differences(old: Any, new: Any, *,
                       safe_fields: Iterable[str] = DEFAULT_SAFE_FIELDS,
                       added_defaults: Mapping[str, Any] = ADDED_FIELD_DEFAULTS
                       ) -> dict[str, tuple[Any, Any]]:
    """Returns ``{dotted field: (old value, new value)}`` for fields that differ and are unsafe.

    A field missing on one side shows as ``"<missing>"``, except a field of
    ``added_defaults`` (dotted path -> value, or a callable of that side's flat
    ``{dotted path: value}``), which reads as that value when missing.
    ``safe_fields`` entries without a dot match a leaf name at any depth; entries with a dot
    match the full dotted path.
    """
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    diffs = {}
    for key in sorted(set(a) | set(b)):
        va, vb = _value(a, key, added_defaults), _value(b, key, added_defaults)
        if json.dumps(va, sort_keys=True) != json.dumps(vb, sort_keys=True) and not _is_safe(
                key, safe_fields):
            diffs[key] = (va, vb)
    return diffs


def load_config(workdir: str | os.PathLike) -> dict | None:
    """Returns the config stored in ``workdir/config.json``, or ``None`` if there is none."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def save_config(workdir: str | os.PathLike, config: Any) -> Path:
    """Writes ``config`` as canonical (indented) JSON to ``workdir/config.json``, atomically.

    Only process 0 writes; the file is written to a temporary name and renamed.
    """
    workdir = Path(workdir)
    path = workdir / CONFIG_FILE
    if jax.process_index() != 0:
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config_to_dict(config), sort_keys=True, indent=2, allow_nan=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".config.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_config_compatible(workdir: str | os.PathLike, config: Any, *,
                            safe_fields: Iterable[str] = DEFAULT_SAFE_FIELDS) -> None:
    """Refuses to resume ``workdir`` if it holds a run of a different config.

    Passes when ``workdir`` has no ``config.json`` (a fresh run; warns if it nevertheless holds
    checkpoints) or when the stored config equals ``config`` except in ``safe_fields`` (see
    :func:`config_differences`).

    Raises:
      ConfigMismatchError: naming every differing field with its stored and new value, and the
        ways out (another workdir, or the stored config).
    """
    stored = load_config(workdir)
    if stored is None:
        ckpt_dir = Path(workdir) / CHECKPOINT_DIR
        if ckpt_dir.is_dir() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
            warnings.warn(f"workdir {os.fspath(workdir)} has checkpoints but no {CONFIG_FILE}; "
                          f"cannot check that they come from the same config.")
        return
    diffs = config_differences(stored, config, safe_fields=safe_fields)
    if diffs:
        lines = "\n".join(f"  {k}: stored {json.dumps(v[0])} != new {json.dumps(v[1])}"
                          for k, v in diffs.items())
        raise ConfigMismatchError(
            f"workdir {os.fspath(workdir)} holds a run of another config; refusing to resume "
            f"it. Fields that differ ({', '.join(diffs)}):\n{lines}\nUse a new workdir, or "
            f"rerun with the stored config ({Path(workdir) / CONFIG_FILE}).")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def _abstract(tree: PyTree) -> PyTree:
    """Shape/dtype/sharding of every array leaf: the restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class CheckpointStore:
    """Keeps the last ``max_to_keep`` checkpoints of a ``TrainState`` under ``workdir``.

    A thin wrapper of ``orbax.checkpoint.CheckpointManager``: every process must call
    ``save``/``restore`` (orbax synchronises them). Usable as a context manager; ``close``
    waits for saves in flight.

    Args:
      workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
      max_to_keep: how many of the latest checkpoints to keep (``None``: all).
      async_save: let orbax write in a background thread (the call returns after the arrays
        are copied off the device). Default off: a save is complete when ``save`` returns.
    """

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int | None = 3,
                 async_save: bool = False):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"CheckpointStore: max_to_keep must be >= 1 or None, got "
                             f"{max_to_keep}.")
        self.directory = (Path(workdir) / CHECKPOINT_DIR).absolute()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=(_ITEM,))

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None``."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree) -> bool:
        """Saves ``state`` as checkpoint ``step`` (no-op returning False if it exists)."""
        if step in self._manager.all_steps():
            return False
        return self._manager.save(int(step), args=ocp.args.Composite(
            **{_ITEM: ocp.args.StandardSave(state)}), force=True)

    def restore(self, like: PyTree, step: int | None = None) -> PyTree:
        """Restores checkpoint ``step`` (default: latest) into the structure of ``like``.

        Arrays come back with ``like``'s shapes, dtypes and shardings.

        Raises:
          FileNotFoundError: there is no such checkpoint.
        """
        if step is None:
            step = self.latest_step()
        if step is None or step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint {'at all' if step is None else step} in "
                                    f"{self.directory} (have {self.all_steps()}).")
        restored = self._manager.restore(int(step), args=ocp.args.Composite(
            **{_ITEM: ocp.args.StandardRestore(_abstract(like))}))
        return restored[_ITEM]

    def restore_or_init(self, state: PyTree) -> PyTree:
        """Returns the latest checkpoint restored into ``state``'s structure, else ``state``."""
        if self.latest_step() is None:
            return state
        return self.restore(state)

    def wait(self) -> None:
        """Blocks until every save in flight is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves in flight and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore_or_init(workdir: str | os.PathLike, state: PyTree) -> PyTree:
    """Restores the latest checkpoint of ``workdir`` into ``state``'s structure, else ``state``.

    Args:
      workdir: the run directory (checkpoints under ``workdir/checkpoints``).
      state: a freshly initialised ``TrainState`` (or any pytree of arrays); gives the
        structure, shapes, dtypes and shardings of the result.

    Returns:
      The restored state (its ``step`` tells where to continue) or ``state`` itself.
    """
    with CheckpointStore(workdir) as store:
        return store.restore_or_init(state)
