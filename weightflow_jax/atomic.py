"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

Every writer here writes into a temporary file in the target's directory (so the final
``os.replace`` is atomic on POSIX), flushes and fsyncs it, then renames it into place; the
temporary file is removed if writing fails. Imports nothing else of ``weightflow_jax``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
import tempfile
from typing import Any, Callable, IO

import numpy as np

__all__ = ["write_atomic", "savez", "write_json", "write_text", "json_default", "read_json"]


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Calls ``write(fileobj)`` on a temporary binary file, then moves it to ``path``.

    The parent directory is created if missing. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are not secret
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def savez(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez`` of ``arrays`` to ``path``, atomically."""
    return write_atomic(path, lambda f: np.savez(f, **{k: np.asarray(v)
                                                       for k, v in arrays.items()}))


def json_default(o: Any) -> Any:
    """``json.dumps`` ``default=``: numpy scalars/arrays to Python values, else ``str``."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """JSON of ``obj`` (numpy scalars/arrays converted) to ``path``, atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=json_default) + "\n"
    return write_text(path, text)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 ``text`` to ``path``, atomically."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON at ``path``, or ``None`` when it is missing or unreadable (a file written
    here is complete or absent, so unreadable means not ours)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
