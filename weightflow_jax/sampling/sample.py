"""Drawing networks from a trained flow, and the ``samples.npz`` file format.

:func:`sample` draws ``num`` prior points (one key per sample, so results do not depend on
the chunk size), integrates them in chunks of ``batch_size`` with :func:`integrate` (one
compiled function; the last chunk is padded), and decodes them to plain MLP weights as the
named representative of their rescaling orbit (``representative``, default ``"balanced"``:
equal incoming/outgoing norms per hidden neuron, the minimum-norm member, see
:mod:`weightflow_jax.symmetry.representatives`; ``"exact"``: the flow's own decoding, all
scale in the last layer). Both compute the same logits.

``samples.npz`` holds ``W0, b0, W1, b1, ...``: ``W{i}`` float32 ``(n, out, in)``, ``b{i}``
float32 ``(n, out)``, and ``representative`` (a 0-d string array naming the form, when
known); it loads with numpy alone (``np.load(path)["W0"]``). It is written
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
from weightflow_jax.sampling.solvers import check_output_scale, check_solver, integrate
from weightflow_jax.symmetry import Canonical
from weightflow_jax.symmetry.representatives import (DEFAULT_REPRESENTATIVE,
                                                     check_representative, represent)

__all__ = ["sample", "sample_coords", "decode_samples", "save_samples_npz",
           "load_samples_npz", "samples_representative"]

PredictFn = Callable[[Canonical, jax.Array], Canonical]


def sample_coords(space: FlowSpace, predict_fn: PredictFn, key: jax.Array, num: int, *,
                  steps: int = 512, solver: str = "euler", guidance: Guidance | None = None,
                  batch_size: int = 128, parameterization: str = "target",
                  prior_std: float = 0.1, rtol: float = 1e-3, atol: float = 1e-5,
                  max_steps: int = 4096, output_scale: str | float = "flow",
                  flow_velocity: str = "conditional") -> Canonical:
    """Flow samples in the flow's coordinates (on the data manifold), host numpy arrays.

    Args: as :func:`sample`.

    Returns:
      :class:`Canonical` with leading axis ``num`` (numpy float32 leaves).
    """
    check_solver(space, solver)
    output_scale = check_output_scale(output_scale)
    if output_scale == "learn" and guidance is None:
        raise ValueError("output_scale='learn' lets the guidance set the output scale; pass "
                         "guidance, or a fixed scale (e.g. 1.0) for unguided sampling")
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
                         max_steps=max_steps, output_scale=output_scale,
                         flow_velocity=flow_velocity)

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
           return_coords: bool = False, output_scale: str | float = "flow",
           representative: str = DEFAULT_REPRESENTATIVE, flow_velocity: str = "conditional"):
    """Samples ``num`` networks from a trained flow and decodes them to plain weights.

    Args:
      space: the flow's space (its ``sizes`` may differ from the training architecture if
        ``predict_fn`` handles it, e.g. a wider hidden layer; use ``space.with_sizes``).
      predict_fn: ``(x_batch, t) -> raw output`` of the trained model, for a batch.
      key: PRNG key; sample ``i`` uses ``jax.random.split(key, num)[i]``.
      num: number of networks.
      steps: Euler steps (thesis: 512); initial step of adaptive solvers.
      solver: ``"euler"`` or ``"midpoint"`` (all flows) or an adaptive one
        (euclidean/normalized only), see
        :mod:`weightflow_jax.sampling.solvers`.
      guidance: optional :class:`Guidance` (build with :func:`make_guidance`).
      batch_size: samples integrated at once (bounds memory).
      parameterization: ``"target"`` or ``"velocity"``.
      prior_std: standard deviation of the prior (thesis 0.1).
      rtol, atol, max_steps: adaptive solver settings.
      return_coords: also return the coordinates (see :func:`sample_coords`).
      output_scale: the last layer's norm: ``"flow"`` (sampled with the rest), a positive
        number (held fixed; 1 = the thesis's canonical form) or ``"learn"`` (set by the
        guidance alone). For a task other than the flow's own, the flow's output scale is
        the scale of its training task's logits. The euclidean flow has no scale
        coordinate: a number rescales its last layer after sampling, ``"learn"`` leaves it
        to the guidance acting on the raw weights.
      representative: the decoded form, ``"balanced"`` or ``"exact"`` (module docstring).
      flow_velocity: ``"conditional"`` (the field's own velocity) or ``"displacement"``
        (no pull back to the field's endpoint; for guidance), see
        :mod:`weightflow_jax.sampling.solvers`.

    Returns:
      list of ``(W (num, out, in), b (num, out))`` numpy float32: networks computing the
      decoded functions (exact canonical mode restores the logit scale); and the
      coordinates when ``return_coords``.
    """
    check_representative(representative)
    coords = sample_coords(space, predict_fn, key, num, steps=steps, solver=solver,
                           guidance=guidance, batch_size=batch_size,
                           parameterization=parameterization, prior_std=prior_std, rtol=rtol,
                           atol=atol, max_steps=max_steps, output_scale=output_scale,
                           flow_velocity=flow_velocity)
    params = decode_samples(space, coords, representative=representative,
                            output_scale=output_scale)
    return (params, coords) if return_coords else params


def decode_samples(space: FlowSpace, coords: Canonical, *,
                   representative: str = DEFAULT_REPRESENTATIVE,
                   output_scale: str | float = "flow", chunk: int = 256) -> mlp.Params:
    """Plain host weights (numpy float32) from a batch of flow coordinates.

    Args:
      space: the flow's space.
      coords: batch of coordinates (leading axis ``n``).
      representative: ``"balanced"`` or ``"exact"`` (see the module docstring).
      output_scale: a number rescales the euclidean flow's last layer (``W_L`` and ``b_L``)
        to that Frobenius norm; canonical flows hold it in their coordinates already.
    """
    check_representative(representative)
    output_scale = check_output_scale(output_scale)
    fixed = (space.kind == "euclidean" and not isinstance(output_scale, str))

    @jax.jit
    def dec(c):
        params = space.decode(c)
        if fixed:
            w, b = params[-1]
            norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=(-2, -1)))
            f = output_scale / jnp.maximum(norm, 1e-12)
            params = params[:-1] + [(w * f[:, None, None], b * f[:, None])]
        return represent(params, representative)

    n = int(np.shape(coords.layers[0][0])[0])
    parts = []
    for start in range(0, n, chunk):
        part = jax.tree.map(lambda a: jnp.asarray(a[start:start + chunk]), coords)
        parts.append([(np.asarray(w, np.float32), np.asarray(b, np.float32))
                      for w, b in dec(part)])
    return [tuple(np.concatenate([p[i][j] for p in parts]) for j in range(2))
            for i in range(len(parts[0]))]


def save_samples_npz(path: str, params: mlp.Params, *, representative: str | None = None
                     ) -> str:
    """Writes a batch of networks as ``W0, b0, W1, b1, ...`` atomically.

    Args:
      path: destination (``.npz`` is not appended); its directory must exist.
      params: list of ``(W (n, out, in), b (n, out))``; validated (shapes chain, finite).
      representative: the form the networks are in (``"balanced"``/``"exact"``), stored as
        the 0-d string array ``representative`` (read back by :func:`samples_representative`).

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
    if representative is not None:
        arrays["representative"] = np.asarray(check_representative(representative))
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


def samples_representative(path: str) -> str | None:
    """The ``representative`` a samples file says it holds, or ``None`` (older files)."""
    with np.load(path, allow_pickle=False) as z:
        return str(z["representative"]) if "representative" in z.files else None
