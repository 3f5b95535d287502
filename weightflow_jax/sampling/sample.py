"""Drawing networks from a trained flow, and the ``samples.npz`` file format.

:func:`sample` draws ``num`` prior points (one key per sample, so results do not depend on
the chunk size), integrates them in chunks of ``batch_size`` with :func:`integrate` (one
compiled function; the last chunk is padded), and decodes them to plain MLP weights.

``samples.npz`` holds ``W0, b0, W1, b1, ...``: ``W{i}`` float32 ``(n, out, in)``, ``b{i}``
float32 ``(n, out)``; it loads with numpy alone (``np.load(path)["W0"]``). It is written
through a temporary file in the same directory and ``os.replace``: the path holds either
the old file or the complete new one, never a partial file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import atomic, mlp
from weightflow_jax.flows.paths import sample_prior
from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.sampling.guidance import Guidance, check_task
from weightflow_jax.sampling.solvers import check_solver, integrate
from weightflow_jax.symmetry import Canonical

__all__ = ["sample", "sample_coords", "save_samples_npz", "load_samples_npz"]

PredictFn = Callable[[Canonical, jax.Array], Canonical]


def sample_coords(space: FlowSpace, predict_fn: PredictFn, key: jax.Array, num: int, *,
                  steps: int = 512, solver: str = "euler", guidance: Guidance | None = None,
                  batch_size: int = 128, parameterization: str = "target",
                  prior_std: float = 0.1, rtol: float = 1e-3, atol: float = 1e-5,
                  max_steps: int = 4096) -> Canonical:
    """Flow samples in the flow's coordinates (on the data manifold), host numpy arrays.

    Args: as :func:`sample`.

    Returns:
      :class:`Canonical` with leading axis ``num`` (numpy float32 leaves).
    """
    check_solver(space, solver)
    num, batch_size = int(num), int(batch_size)
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if guidance is not None:
        check_task(space.sizes, guidance.x, guidance.y, "guidance task")
    chunk = min(batch_size, num)
    keys = jax.random.split(key, num)

    @jax.jit
    def run(ks, g):
        x0 = jax.vmap(lambda k: sample_prior(k, space, prior_std))(ks)
        return integrate(space, predict_fn, x0, steps=steps, solver=solver, guidance=g,
                         parameterization=parameterization, rtol=rtol, atol=atol,
                         max_steps=max_steps)

    parts = []
    for start in range(0, num, chunk):
        idx = np.minimum(np.arange(start, start + chunk), num - 1)  # pad the last chunk
        out = run(keys[idx], guidance)
        m = min(chunk, num - start)
        parts.append(jax.tree.map(lambda a: np.asarray(a)[:m], out))
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *parts)


def sample(space: FlowSpace, predict_fn: PredictFn, key: jax.Array, num: int, *,
           steps: int = 512, solver: str = "euler", guidance: Guidance | None = None,
           batch_size: int = 128, parameterization: str = "target", prior_std: float = 0.1,
           rtol: float = 1e-3, atol: float = 1e-5, max_steps: int = 4096,
           return_coords: bool = False):
    """Samples ``num`` networks from a trained flow and decodes them to plain weights.

    Args:
      space: the flow's space (its ``sizes`` may differ from the training architecture if
        ``predict_fn`` handles it, e.g. a wider hidden layer; use ``space.with_sizes``).
      predict_fn: ``(x_batch, t) -> raw output`` of the trained model, for a batch.
      key: PRNG key; sample ``i`` uses ``jax.random.split(key, num)[i]``.
      num: number of networks.
      steps: Euler steps (thesis: 512); initial step of adaptive solvers.
      solver: ``"euler"`` (all flows) or an adaptive one (euclidean/normalized only), see
        :mod:`weightflow_jax.sampling.solvers`.
      guidance: optional :class:`Guidance` (build with :func:`make_guidance`).
      batch_size: samples integrated at once (bounds memory).
      parameterization: ``"target"`` or ``"velocity"``.
      prior_std: standard deviation of the prior (thesis 0.1).
      rtol, atol, max_steps: adaptive solver settings.
      return_coords: also return the coordinates (see :func:`sample_coords`).

    Returns:
      list of ``(W (num, out, in), b (num, out))`` numpy float32: networks computing the
      decoded functions (exact canonical mode restores the logit scale); and the
      coordinates when ``return_coords``.
    """
    coords = sample_coords(space, predict_fn, key, num, steps=steps, solver=solver,
                           guidance=guidance, batch_size=batch_size,
                           parameterization=parameterization, prior_std=prior_std, rtol=rtol,
                           atol=atol, max_steps=max_steps)
    decode = jax.jit(space.decode)
    params = [(np.asarray(w, np.float32), np.asarray(b, np.float32))
              for w, b in decode(jax.tree.map(jnp.asarray, coords))]
    return (params, coords) if return_coords else params


def save_samples_npz(path: str, params: mlp.Params) -> str:
    """Writes a batch of networks as ``W0, b0, W1, b1, ...`` atomically.

    Args:
      path: destination (``.npz`` is not appended); its directory must exist.
      params: list of ``(W (n, out, in), b (n, out))``; validated (shapes chain, finite).

    Returns:
      ``path``. On any error no file is left at ``path`` (an existing one is untouched)
      and the temporary file is removed.
    """
    params = mlp.as_params(params)
    mlp.validate(params, batched=True)
    arrays = {}
    for i, (w, b) in enumerate(params):
        arrays[f"W{i}"] = np.asarray(w, np.float32)
        arrays[f"b{i}"] = np.asarray(b, np.float32)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r} of {path!r} does not exist; create it first")
    atomic.savez(path, **arrays)
    return path


_KEY = re.compile(r"^([Wb])(\d+)$")


def load_samples_npz(path: str) -> mlp.Params:
    """Reads a file written by :func:`save_samples_npz`.

    Returns:
      list of ``(W (n, out, in), b (n, out))`` numpy float32.

    Raises:
      ValueError when layers are missing or numbered with gaps, or shapes do not chain.
    """
    with np.load(path, allow_pickle=False) as z:
        found: dict[int, dict[str, np.ndarray]] = {}
        for k in z.files:
            m = _KEY.match(k)
            if m:
                found.setdefault(int(m.group(2)), {})[m.group(1)] = np.asarray(z[k])
    if not found:
        raise ValueError(f"{path!r} holds no W0/b0 arrays; expected W0, b0, W1, b1, ...")
    n_layers = max(found) + 1
    params = []
    for i in range(n_layers):
        layer = found.get(i, {})
        if "W" not in layer or "b" not in layer:
            raise ValueError(f"{path!r}: layer {i} lacks W{i} or b{i}; found layers "
                             f"{sorted(found)} with keys {[sorted(v) for v in found.values()]}")
        params.append((layer["W"].astype(np.float32), layer["b"].astype(np.float32)))
    mlp.validate(params, batched=True, check_finite=False)
    return params

