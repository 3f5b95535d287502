"""Dotted config overrides (``"model.rt.width=32"``) parsed with the type of the field.

Pure functions over :class:`ml_collections.ConfigDict`: a table row is a config file plus an
ordered list of ``(dotted key, value)`` overrides, and the command line adds ``--set`` items
to it; a benchmark variant (:func:`parse_variant`) is a label plus such items. Every misspelt
key is an error that lists the fields of its group.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

__all__ = ["Overrides", "parse_set", "parse_variant", "apply_overrides", "standard_overrides"]

Overrides = Sequence[tuple[str, Any]]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_set(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``["model.compact_rt.width=32", ...]`` -> ``[("model.compact_rt.width", "32"), ...]``.

    Raises:
      ValueError: an item without ``=`` or with an empty key.
    """
    out = []
    for item in items or ():
        pair = _key_value(item)
        if pair is None:
            raise ValueError(f"--set {item!r}: expected key=value with a dotted config "
                             "field, e.g. --set=model.compact_rt.width=32")
        out.append(pair)
    return out


def _key_value(item: str) -> tuple[str, str] | None:
    """``"key=value"`` -> ``("key", "value")`` stripped; ``None`` without ``=`` or key."""
    key, sep, value = str(item).partition("=")
    if not sep or not key.strip():
        return None
    return key.strip(), value.strip()


def parse_variant(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``"label|key=value|key=value"`` -> ``(label, [(key, value), ...])`` in order.

    The items are dotted config fields (apply them with :func:`apply_overrides`) or keys the
    caller gives a meaning of its own (the learning benchmark's ``budget``).

    Raises:
      ValueError: an empty variant, or an item without ``=`` or with an empty key.
    """
    parts = [s.strip() for s in str(text).split("|") if s.strip()]
    if not parts:
        raise ValueError(f"empty variant {text!r}; write 'label|key=value|...'")
    out = []
    for item in parts[1:]:
        pair = _key_value(item)
        if pair is None:
            raise ValueError(f"variant {text!r}: {item!r} is not key=value; write "
                             "'label|key=value|...', e.g. 'crt|model.name=compact_rt'")
        out.append(pair)
    return parts[0], out


def _parse_like(key: str, text: str, current: Any, source: str = "--set") -> Any:
    """``text`` parsed with the type of the field's current value."""
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError("not a bool")
        if isinstance(current, int):
            v = float(text) if any(c in text for c in ".eE") else int(text)
            if float(v) != int(v):
                raise ValueError("not an integer")
            return int(v)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, (tuple, list)):
            v = ast.literal_eval(text)
            return tuple(v) if isinstance(v, (tuple, list)) else (v,)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{source} {key}={text}: cannot parse {text!r} as the field's type "
                         f"{type(current).__name__} (current value {current!r}): {e}") from None
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ValueError(f"{source} {key}: field has unsupported type {type(current).__name__}")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Overrides | Mapping[str, Any], *,
                    source: str = "--set") -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted ``key -> value`` overrides applied in order.

    String values are parsed with the type of the existing field (bool: true/false/1/0,
    int, float, str, tuple: a Python literal); other values are assigned as they are.
    ``source`` names where the overrides came from in error messages (``--set``,
    ``--variant``).

    Raises:
      ValueError: a field that does not exist (listing its group's fields), a group given
        instead of a field, or a value that does not parse as the field's type.
    """
    cfg = copy.deepcopy(config)
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in items:
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                parent = ".".join(parts[:i]) or "the config"
                fields = (sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict)
                          else [])
                raise ValueError(f"{source} {key}: {parent} has no field {part!r}; its fields: "
                                 f"{', '.join(fields)}")
            if i < len(parts) - 1:
                node = node[part]
        leaf = parts[-1]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"{source} {key}: is a group, not a field; set one of its fields: "
                             f"{', '.join(sorted(current.keys()))}")
        new = _parse_like(key, value, current, source) if isinstance(value, str) else value
        try:
            node[leaf] = new
        except TypeError as e:
            raise ValueError(f"{source} {key}={value!r}: {e}") from None
    return cfg


def standard_overrides(steps: int = 0, num: int = 0, sample_steps: int = 0,
                       seed: int | None = None,
                       sets: Sequence[str] | Overrides = ()) -> list[tuple[str, Any]]:
    """The command line's flags as one ordered override list (``--set`` last, so it wins).

    Raises:
      ValueError: a negative ``steps``/``num``/``sample_steps`` or a malformed ``--set``.
    """
    out: list[tuple[str, Any]] = []
    for name, flag, value in (("train.steps", "--steps", steps), ("sample.num", "--num", num),
                              ("sample.steps", "--sample_steps", sample_steps)):
        if int(value) < 0:
            raise ValueError(f"{flag} must be >= 0 (0 = the config's value), got {value}")
        if int(value):
            out.append((name, int(value)))
    if seed is not None:
        out.append(("seed", int(seed)))
    for item in sets:
        out.extend(parse_set([item]) if isinstance(item, str) else [tuple(item)])
    return out
