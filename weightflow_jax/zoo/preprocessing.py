"""Symmetry removal for a whole zoo (cached next to it) and linear-path loss barriers.

:func:`preprocess` aligns every snapshot of a zoo to one reference network by weight
matching (:func:`weightflow_jax.symmetry.align`) and then canonicalizes it
(:func:`weightflow_jax.symmetry.canonicalize`). The default reference is **the last
snapshot of run 0** (its final network when ``snapshot_every`` divides the iterations per
epoch); ``reference="template"`` aligns to an iterated template of the runs' final networks
instead (:func:`alignment_template`). By default every snapshot gets its own permutation
(``scope="snapshot"``, as the thesis); ``scope="run"`` gives every snapshot of a run the
permutation that aligns the run's final network, so each training trajectory stays one
continuous path in the aligned space (SGD is permutation-equivariant, so this is as valid a
representative of every snapshot, and a snapshot of a run and its next one differ only by
the training step between them). Results are cached in ``<zoo>/preprocessed/<key>.npz``, the key naming alignment,
canonical mode, a hash of the reference weights, ``max_iter`` and ``seed``.

:func:`loss_barrier` measures how much the loss rises above the straight line between two
networks' losses along the linear path between their weights; :func:`barrier_report`
averages it over random pairs of runs' final snapshots, before and after alignment.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from weightflow_jax import mlp
from weightflow_jax.zoo import store

__all__ = ["Preprocessed", "preprocess", "alignment_template", "run_permutations",
           "loss_barrier", "barrier_report", "CANON_MODES", "ALIGN_SCOPES"]

CANON_MODES = ("none", "exact", "thesis")
ALIGN_SCOPES = ("snapshot", "run")


class Preprocessed(NamedTuple):
    """A preprocessed zoo.

    Attributes:
      params: list of ``(W (N, out, in), b (N, out))``: the aligned snapshots (the raw ones
        when ``align=False``); same functions as the zoo's snapshots.
      canonical: :class:`weightflow_jax.symmetry.Canonical` of ``params`` with a leading
        ``(N,)`` axis (``log_scale`` ``(N,)`` in exact mode, ``None`` in thesis mode), or
        ``None`` for ``mode="none"``.
      reference: the reference network (single, no batch axis).
      reference_index: its snapshot index in the zoo, ``-1`` when given as weights.
      key: cache key.
    """

    params: mlp.Params
    canonical: Any
    reference: mlp.Params
    reference_index: int
    key: str


def _ref_hash(reference: mlp.Params) -> str:
    h = hashlib.sha256()
    for w, b in reference:
        h.update(np.ascontiguousarray(np.asarray(w, np.float32)).tobytes())
        h.update(np.ascontiguousarray(np.asarray(b, np.float32)).tobytes())
    return h.hexdigest()[:16]


def _resolve_reference(zoo: store.Zoo, reference: Any) -> tuple[mlp.Params, int]:
    if reference is None:
        idx = int(zoo.final_indices()[0])
    elif isinstance(reference, (int, np.integer)):
        idx = int(reference)
        if not -zoo.num_snapshots <= idx < zoo.num_snapshots:
            raise ValueError(f"reference index {idx} is outside the zoo's "
                             f"{zoo.num_snapshots} snapshots")
        idx %= zoo.num_snapshots
    else:
        ref = [(np.asarray(w, np.float32), np.asarray(b, np.float32))
               for w, b in mlp.as_params(reference)]
        sizes = mlp.validate(ref, batched=False)
        if sizes != zoo.layer_sizes:
            raise ValueError(f"reference has layer sizes {sizes} but the zoo has "
                             f"{zoo.layer_sizes}")
        return ref, -1
    return [(np.asarray(w[idx]), np.asarray(b[idx])) for w, b in zoo.params], idx


def alignment_template(zoo: store.Zoo, iters: int = 3, *, max_iter: int = 100,
                       seed: int = 0) -> tuple[mlp.Params, np.ndarray]:
    """An alignment reference that sits in the middle of the runs, not at one of them.

    Starts from run 0's final network; each of ``iters`` rounds aligns every run's final
    network to the current template (weight matching) and replaces the template by their
    mean. One reference network is as far from the other runs as they are from each other;
    the mean of the aligned runs is nearer to all of them, so the aligned zoo is less spread
    (the choice of reference is a free variable of the symmetry removal).

    Args:
      zoo: the zoo (its final snapshots are used).
      iters: rounds (``>= 1``).
      max_iter, seed: weight-matching settings.

    Returns:
      ``(template, distance)``: the template network (single, float32) and ``distance``
      ``(iters + 1,)``: root-mean-square L2 distance of the aligned final networks to the
      template before the first round (to run 0's network) and after each round.
    """
    from weightflow_jax import symmetry

    if int(iters) < 1:
        raise ValueError(f"template iterations must be >= 1, got {iters}; use the default "
                         "reference (run 0's final network) for none")
    finals = [(jnp.asarray(w[zoo.final_indices()]), jnp.asarray(b[zoo.final_indices()]))
              for w, b in zoo.params]
    template, _ = _resolve_reference(zoo, None)

    def dist(aligned, ref):  # root-mean-square: the mean is its minimizer
        sq = sum(jnp.sum((w - rw[None]) ** 2, axis=(1, 2)) + jnp.sum((b - rb[None]) ** 2, axis=1)
                 for (w, b), (rw, rb) in zip(aligned, ref))
        return float(jnp.sqrt(jnp.mean(sq)))

    aligned = symmetry.align(finals, template, max_iter=max_iter, seed=seed)
    distance = [dist(aligned, template)]
    for _ in range(int(iters)):
        template = [(np.asarray(jnp.mean(w, axis=0), np.float32),
                     np.asarray(jnp.mean(b, axis=0), np.float32)) for w, b in aligned]
        aligned = symmetry.align(finals, template, max_iter=max_iter, seed=seed)
        distance.append(dist(aligned, template))
    return template, np.asarray(distance, np.float64)


def run_permutations(zoo: store.Zoo, reference: mlp.Params, *, max_iter: int = 100,
                     seed: int = 0) -> list[np.ndarray]:
    """The permutation that aligns each run's final network to ``reference``.

    Returns:
      ``L - 1`` integer arrays, each ``(num_runs, h_l)``: row ``r`` permutes hidden layer
      ``l`` of run ``r`` (new neuron ``i`` is old neuron ``perm[i]``), as
      :func:`weightflow_jax.symmetry.permute` takes them.
    """
    from weightflow_jax import symmetry

    finals = zoo.final_indices()  # row r: run r's last snapshot
    _, perms = symmetry.align([(jnp.asarray(w[finals]), jnp.asarray(b[finals]))
                               for w, b in zoo.params], reference, max_iter=max_iter,
                              seed=seed, return_perms=True)
    return [np.asarray(p) for p in perms]


def preprocess(zoo: store.Zoo | str, mode: str = "exact", reference: Any = None, *,
               align: bool = True, max_iter: int = 100, seed: int = 0, cache: bool = True,
               chunk_size: int = 1024, progress: bool = False,
               template_iters: int = 3, scope: str = "snapshot") -> Preprocessed:
    """Aligns all snapshots of a zoo to one reference network, then canonicalizes them.

    Args:
      zoo: a :class:`weightflow_jax.zoo.store.Zoo` or the path of one.
      mode: canonical form: ``"exact"`` (function kept exactly, last-layer norm as
        ``log_scale``), ``"thesis"`` (last layer on the unit sphere, argmax kept) or
        ``"none"`` (alignment only).
      reference: ``None`` (default: last snapshot of run 0), a snapshot index, a single
        network's weights, or ``"template"`` (:func:`alignment_template` with
        ``template_iters`` rounds; ``reference_index`` is then ``-1``).
      align: permutation-align to the reference (``False``: canonicalize raw snapshots).
      max_iter, seed: weight-matching settings.
      cache: read/write ``<zoo>/preprocessed/<key>.npz`` (only for zoos loaded from disk).
      chunk_size: snapshots per alignment / canonicalization call.
      progress: tqdm bar over chunks.
      scope: ``"snapshot"`` (every snapshot weight-matched on its own) or ``"run"`` (every
        snapshot permuted by :func:`run_permutations`, the permutation of its run's final
        network).

    Returns:
      :class:`Preprocessed`.
    """
    from weightflow_jax import symmetry  # lazy: keeps zoo importable on its own

    if isinstance(zoo, (str, os.PathLike)):
        zoo = store.load_zoo(str(zoo))
    if mode not in CANON_MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {CANON_MODES}")
    if scope not in ALIGN_SCOPES:
        raise ValueError(f"unknown alignment scope {scope!r}; choose one of {ALIGN_SCOPES}")
    if scope == "run" and not align:
        raise ValueError("scope='run' only matters with align=True")
    if isinstance(reference, str):
        if reference != "template":
            raise ValueError(f"unknown reference {reference!r}; use None (run 0's final "
                             "network), a snapshot index, weights or 'template'")
        if not align:
            raise ValueError("reference='template' only matters with align=True")
        ref, _ = alignment_template(zoo, template_iters, max_iter=max_iter, seed=seed)
        ref_idx = -1
    else:
        ref, ref_idx = _resolve_reference(zoo, reference)
    key = (f"aligned-ref{_ref_hash(ref)}-it{int(max_iter)}-seed{int(seed)}"
           + ("-perrun" if scope == "run" else "") if align else "raw") + f"-{mode}"
    path = None
    if cache and zoo.path is not None:
        path = os.path.join(zoo.path, "preprocessed", f"{key}.npz")
        if os.path.exists(path):
            got = _load_cached(path, zoo, mode)
            if got is not None:
                return Preprocessed(got[0], got[1], ref, ref_idx, key)
    n = zoo.num_snapshots
    run_perms = (run_permutations(zoo, ref, max_iter=max_iter, seed=seed)
                 if scope == "run" else None)  # scope "run" implies align (checked above)
    chunks_p, chunks_c = [], []
    starts = range(0, n, max(1, int(chunk_size)))
    for start in tqdm(starts, disable=not progress, desc=f"preprocess {key}"):
        part = [(jnp.asarray(w[start:start + chunk_size]), jnp.asarray(b[start:start + chunk_size]))
                for w, b in zoo.params]
        if run_perms is not None:
            runs = zoo.run_id[start:start + chunk_size]
            part = symmetry.permute_batch(part, [jnp.asarray(p[runs]) for p in run_perms])
        elif align:
            part = symmetry.align(part, ref, max_iter=max_iter, seed=seed)
        chunks_p.append([(np.asarray(w), np.asarray(b)) for w, b in part])
        if mode != "none":
            c = symmetry.canonicalize(part, mode=mode)
            chunks_c.append(([(np.asarray(w), np.asarray(b)) for w, b in c.layers],
                             None if c.log_scale is None else np.asarray(c.log_scale)))
    n_layers = len(zoo.params)
    params = [(np.concatenate([c[l][0] for c in chunks_p]),
               np.concatenate([c[l][1] for c in chunks_p])) for l in range(n_layers)]
    canonical = None
    if mode != "none":
        layers = [(np.concatenate([c[0][l][0] for c in chunks_c]),
                   np.concatenate([c[0][l][1] for c in chunks_c])) for l in range(n_layers)]
        log_scale = (None if mode == "thesis"
                     else np.concatenate([c[1] for c in chunks_c]).astype(np.float32))
        canonical = symmetry.Canonical(layers, log_scale)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        arrays = {}
        for l, (w, b) in enumerate(params):
            arrays[f"W{l}"], arrays[f"b{l}"] = w, b
        if canonical is not None:
            for l, (w, b) in enumerate(canonical.layers):
                arrays[f"cW{l}"], arrays[f"cb{l}"] = w, b
            if canonical.log_scale is not None:
                arrays["log_scale"] = canonical.log_scale
        arrays["reference_index"] = np.int64(ref_idx)
        store.atomic_savez(path, **arrays)
    return Preprocessed(params, canonical, ref, ref_idx, key)


def _load_cached(path: str, zoo: store.Zoo, mode: str):
    """Cached ``(params, canonical)`` or ``None`` when the file does not fit the zoo."""
    from weightflow_jax import symmetry

    try:
        with np.load(path) as f:
            a = {k: f[k] for k in f.files}
    except (OSError, ValueError):
        return None
    n_layers = len(zoo.params)
    try:
        params = [(a[f"W{l}"], a[f"b{l}"]) for l in range(n_layers)]
        canonical = None
        if mode != "none":
            layers = [(a[f"cW{l}"], a[f"cb{l}"]) for l in range(n_layers)]
            canonical = symmetry.Canonical(layers, a.get("log_scale") if mode == "exact"
                                           else None)
            if mode == "exact" and canonical.log_scale is None:
                return None
    except KeyError:
        return None
    for (w, b), (w0, b0) in zip(params, zoo.params):
        if w.shape != w0.shape or b.shape != b0.shape:
            return None
    return params, canonical


# ---------------------------------------------------------------------------- barrier
def _mean_loss(params: mlp.Params, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = mlp.forward(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@functools.partial(jax.jit, static_argnames=("num_points",))
def loss_barrier(params_a: mlp.Params, params_b: mlp.Params, x: jax.Array, y: jax.Array,
                 num_points: int = 25) -> jax.Array:
    """Loss barrier on the linear path between two networks.

    ``max_t [L((1 - t) a + t b) - ((1 - t) L(a) + t L(b))]`` over ``num_points`` evenly
    spaced ``t`` in ``[0, 1]`` (endpoints included, so the barrier is ``>= 0``), ``L`` the
    mean cross-entropy on ``x (n, d_in)``, ``y (n,)`` int.

    Args:
      params_a, params_b: single networks (no batch axis) of the same layer sizes;
        ``jax.vmap`` over pairs for batches.
      num_points: points on the path (static, ``>= 2``).

    Returns:
      Scalar barrier.
    """
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    ts = jnp.linspace(0.0, 1.0, num_points)

    def at(t):
        p = jax.tree_util.tree_map(lambda a, b: (1.0 - t) * a + t * b, params_a, params_b)
        return _mean_loss(p, x, y)

    losses = jax.lax.map(at, ts)
    line = (1.0 - ts) * losses[0] + ts * losses[-1]
    return jnp.max(losses - line)


def barrier_report(zoo: store.Zoo, x: Any, y: Any, *, aligned: Preprocessed | None = None,
                   num_pairs: int = 50, num_points: int = 25, seed: int = 0) -> dict:
    """Mean loss barrier between random pairs of runs' final snapshots, before and after
    alignment.

    Args:
      zoo: the zoo.
      x, y: data for the loss, ``(n, d_in)`` float32 and ``(n,)`` int.
      aligned: output of :func:`preprocess` (its aligned ``params``); default:
        ``preprocess(zoo, "none")`` (default reference, cached when the zoo is on disk).
      num_pairs: random pairs of distinct runs (fewer if there are fewer pairs).
      num_points: points on each linear path.
      seed: pair sampling seed.

    Returns:
      ``{"before", "before_std", "after", "after_std", "num_pairs", "num_points"}``.
    """
    if zoo.num_runs < 2:
        raise ValueError("a loss barrier needs at least two runs in the zoo")
    if aligned is None:
        aligned = preprocess(zoo, "none")
    final = zoo.final_indices()
    all_pairs = np.array([(i, j) for i in range(zoo.num_runs) for j in range(i + 1, zoo.num_runs)])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(all_pairs), size=min(num_pairs, len(all_pairs)), replace=False)
    pairs = final[all_pairs[pick]]
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    fn = jax.jit(jax.vmap(lambda a, b: loss_barrier(a, b, x, y, num_points=num_points)))
    out = {"num_pairs": int(len(pairs)), "num_points": int(num_points)}
    for name, params in (("before", zoo.params), ("after", aligned.params)):
        a = [(jnp.asarray(w[pairs[:, 0]]), jnp.asarray(b[pairs[:, 0]])) for w, b in params]
        b_ = [(jnp.asarray(w[pairs[:, 1]]), jnp.asarray(b[pairs[:, 1]])) for w, b in params]
        bars = np.asarray(fn(a, b_))
        out[name] = float(bars.mean())
        out[f"{name}_std"] = float(bars.std())
    return out
