"""Novelty: how far sampled networks are from the training checkpoints.

A generator that memorizes returns (near-)copies of its training data (Zeng et al. 2025).
For each sample we report the distance to its nearest training checkpoint, in two metrics,
after removing the permutation symmetry:

* ``l2``: Euclidean distance of the flattened plain weights (all ``W`` and ``b``), after
  aligning the sample to the zoo's reference network by weight matching (the checkpoints
  are assumed already aligned to that reference, e.g. ``zoo.preprocess(...).params``);
* ``geodesic``: geodesic distance on the product manifold of the canonical coordinates
  (:func:`weightflow_jax.symmetry.canonicalize`, ``mode``): great-circle distance per
  hidden neuron's sphere and for the last-layer sphere, Euclidean on biases and (exact
  mode) ``log_scale``; this also removes the positive-scaling symmetry.

Up to permutation (``run_id`` given): one shared reference makes every distance an upper
bound on the least distance over hidden-neuron permutations, and it favours the
reference's own run for networks far from everything (weight matching to the reference
chooses the permutation that brings them closest to it, not to the checkpoint that is
really nearest). With the checkpoints' ``run_id``, the ``l2`` distance is refined: the
sample is re-aligned by weight matching to the (reference-aligned) nearest checkpoint of
every run and the least distance is kept, so each run gets its own best permutation
(:func:`nearest_per_run_pairwise`). :func:`checkpoint_spacing` does the same with
``pairwise=True``; the tables use both. ``geodesic`` stays reference-aligned.

Reference scale: :func:`checkpoint_spacing` gives each checkpoint's distance to its
nearest *other* checkpoint, excluding the checkpoints of the same run within ``window``
snapshots of it (``window=None`` excludes the whole run, so it measures the distance
between different training runs; ``window=0`` excludes only the checkpoint itself, i.e.
the step between consecutive snapshots along a trajectory). A sample much closer to a
checkpoint than checkpoints of different runs are to each other is a near-copy.

Search: approximate distances for all pairs by matrix products (per-sphere inner products
-> ``arccos``), the ``k_candidates`` best per query are then recomputed exactly with
:func:`weightflow_jax.geometry.product.sq_dist` (float32 cancellation in ``|a|^2 + |b|^2 -
2ab`` would blur distances near 0). Refs are processed in chunks of ``ref_chunk``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import mlp, symmetry
from weightflow_jax.geometry import Sphere, product
from weightflow_jax.flows.spaces import is_factor

__all__ = [
    "WHOLE_RUN",
    "nearest_neighbors",
    "nearest_checkpoint",
    "checkpoint_spacing",
    "run_positions",
    "novelty_summary",
    "nearest_per_run_pairwise",
    "run_coverage",
]

WHOLE_RUN = 2 ** 30  # a window that excludes every checkpoint of the same run


def _approx_sq(spec: Any, q: Any, r: Any) -> jax.Array:
    """``(cq, cr)`` approximate squared distances between two batches."""
    factors = jax.tree.leaves(spec, is_leaf=is_factor)
    total = None
    for factor, a, b in zip(factors, jax.tree.leaves(q), jax.tree.leaves(r)):
        a = a.astype(jnp.float32)
        b = b.astype(jnp.float32)
        if isinstance(factor, Sphere):
            lead = a.ndim - 1 - factor.ndim  # sphere-index axes after the batch axis
            s = math.prod(a.shape[1:1 + lead])
            d = math.prod(a.shape[1 + lead:])
            a2 = a.reshape(a.shape[0], s, d)
            b2 = b.reshape(b.shape[0], s, d)
            dots = jnp.einsum("asd,bsd->abs", a2, b2)
            part = jnp.sum(jnp.arccos(jnp.clip(dots, -1.0, 1.0)) ** 2, axis=-1)
        else:
            a2 = a.reshape(a.shape[0], -1)
            b2 = b.reshape(b.shape[0], -1)
            part = (jnp.sum(a2 * a2, -1)[:, None] + jnp.sum(b2 * b2, -1)[None, :]
                    - 2.0 * a2 @ b2.T)
        total = part if total is None else total + part
    return jnp.maximum(total, 0.0)


_CACHE: dict = {}


def _topk_fn(spec: Any, k: int):
    key = ("topk", repr(spec), k)
    if key in _CACHE:
        return _CACHE[key]

    @jax.jit
    def fn(q, r, valid, qrun, qpos, rrun, rpos, window):
        approx = _approx_sq(spec, q, r)
        excl = (qrun[:, None] == rrun[None, :]) & (jnp.abs(qpos[:, None] - rpos[None, :])
                                                   <= window)
        approx = jnp.where(valid[None, :] & ~excl, approx, jnp.inf)
        neg, idx = jax.lax.top_k(-approx, k)
        return -neg, idx
    _CACHE[key] = fn
    return fn


def _exact_fn(spec: Any):
    key = ("exact", repr(spec))
    if key in _CACHE:
        return _CACHE[key]

    @jax.jit
    def fn(q, cand):
        # q: batch (cq, ...); cand: batch (cq, k, ...)
        one = lambda a, bs: jax.vmap(lambda b: product.sq_dist(spec, a, b))(bs)
        return jax.vmap(one)(q, cand)
    _CACHE[key] = fn
    return fn


def _take(tree: Any, idx: np.ndarray) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[idx]), tree)


def nearest_neighbors(queries: Any, refs: Any, spec: Any, *,
                      exclude: tuple | None = None, k_candidates: int = 8,
                      query_chunk: int = 64, ref_chunk: int = 2048
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ref of every query under the product-manifold distance of ``spec``.

    Args:
      queries: batch pytree (leading axis ``n``), e.g. MLP params or :class:`Canonical`.
      refs: batch pytree of the same structure (leading axis ``N``).
      spec: factor tree for ONE point (``symmetry.euclidean_spec(L)`` for plain weights,
        ``symmetry.manifold_spec(L, mode)`` for canonical coordinates).
      exclude: ``None`` or ``(query_run (n,), query_pos (n,), ref_run (N,), ref_pos (N,),
        window)``: refs with the query's run and ``|pos difference| <= window`` are skipped.
      k_candidates: approximate candidates recomputed exactly per query.
      query_chunk, ref_chunk: chunk sizes.

    Returns:
      ``(distance (n,) float32, index (n,) int64)``; ``inf`` and ``-1`` where no ref is
      allowed.
    """
    n = int(jax.tree.leaves(queries)[0].shape[0])
    big_n = int(jax.tree.leaves(refs)[0].shape[0])
    if big_n == 0:
        raise ValueError("no reference points (checkpoints) to compare with")
    k = max(1, min(int(k_candidates), big_n))
    cq = max(1, min(int(query_chunk), n))
    cr = max(1, min(int(ref_chunk), big_n))
    if exclude is None:
        qrun, qpos = np.full(n, -1, np.int64), np.zeros(n, np.int64)
        rrun, rpos = np.full(big_n, -2, np.int64), np.zeros(big_n, np.int64)
        window = 0
    else:
        qrun, qpos, rrun, rpos, window = exclude
        qrun, qpos = np.asarray(qrun, np.int64), np.asarray(qpos, np.int64)
        rrun, rpos = np.asarray(rrun, np.int64), np.asarray(rpos, np.int64)
        window = WHOLE_RUN if window is None else int(window)
    topk = _topk_fn(spec, k)
    exact = _exact_fn(spec)
    dists = np.empty(n, np.float32)
    index = np.empty(n, np.int64)
    for qs in range(0, n, cq):
        qidx = np.minimum(np.arange(qs, qs + cq), n - 1)
        q = _take(queries, qidx)
        best_d = np.full((cq, k), np.inf, np.float32)
        best_i = np.full((cq, k), -1, np.int64)
        for rs in range(0, big_n, cr):
            ridx = np.minimum(np.arange(rs, rs + cr), big_n - 1)
            valid = np.arange(rs, rs + cr) < big_n
            vals, loc = topk(q, _take(refs, ridx), jnp.asarray(valid),
                             jnp.asarray(qrun[qidx], jnp.int32), jnp.asarray(qpos[qidx],
                                                                             jnp.int32),
                             jnp.asarray(rrun[ridx], jnp.int32),
                             jnp.asarray(rpos[ridx], jnp.int32), jnp.int32(window))
            cand_d = np.concatenate([best_d, np.asarray(vals)], axis=1)
            cand_i = np.concatenate([best_i, ridx[np.asarray(loc)]], axis=1)
            order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(cand_d, order, axis=1)
            best_i = np.take_along_axis(cand_i, order, axis=1)
        ok = np.isfinite(best_d)
        safe_i = np.where(ok, best_i, 0)
        cands = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[safe_i]), refs)
        sq = np.asarray(exact(q, cands), np.float64)
        sq = np.where(ok, sq, np.inf)
        j = np.argmin(sq, axis=1)
        m = min(cq, n - qs)
        dists[qs:qs + m] = np.sqrt(sq[np.arange(cq), j])[:m]
        index[qs:qs + m] = np.where(ok[np.arange(cq), j], best_i[np.arange(cq), j], -1)[:m]
    return dists, index


def _as_np(params: mlp.Params) -> mlp.Params:
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32))
            for w, b in mlp.as_params(params)]


def _canonical(params: mlp.Params, mode: str) -> symmetry.Canonical:
    c = symmetry.canonicalize([(jnp.asarray(w), jnp.asarray(b)) for w, b in params], mode,
                              validate=False)
    return jax.tree.map(np.asarray, c)


def _sq_l2(a: list, b: list) -> float:
    return float(sum(np.sum((np.asarray(wa, np.float64) - wb) ** 2)
                     + np.sum((np.asarray(ba, np.float64) - bb) ** 2)
                     for (wa, ba), (wb, bb) in zip(a, b)))


def nearest_per_run_pairwise(queries: mlp.Params, checkpoints: mlp.Params, run_id: Any, *,
                             exclude_run: Any | None = None, max_iter: int = 100,
                             query_chunk: int = 64, ref_chunk: int = 2048
                             ) -> tuple[np.ndarray, np.ndarray]:
    """L2 distance of every query to its nearest checkpoint, each run aligned on its own.

    For every run, the query's nearest checkpoint of that run under the shared reference
    alignment is the candidate; the query is then aligned to the candidate itself by
    weight matching (:func:`symmetry.weight_matching`, which starts from the identity and
    only accepts improvements, so a candidate is never further than before) and the least
    distance over runs is returned. The result is never larger than the reference-aligned
    nearest distance (that checkpoint is its run's candidate).

    Args:
      queries: ``n`` networks, plain weights, aligned to the checkpoints' reference.
      checkpoints: ``N`` networks aligned to the same reference.
      run_id: ``(N,)`` training run of each checkpoint.
      exclude_run: ``None`` or ``(n,)``: the run whose checkpoints query ``i`` may not use
        (a checkpoint's own run, for :func:`checkpoint_spacing`).
      max_iter: weight-matching sweeps per pair.

    Returns:
      ``(distance (n,) float32, index (n,) int64)``; ``inf`` / ``-1`` where no run is
      allowed.
    """
    sizes = mlp.validate(checkpoints, batched=True, check_finite=False)
    q_np, c_np = _as_np(queries), _as_np(checkpoints)
    n, big_n = int(q_np[0][0].shape[0]), int(c_np[0][0].shape[0])
    run_id = np.asarray(run_id, np.int64)
    if run_id.shape != (big_n,):
        raise ValueError(f"run_id must be shaped ({big_n},) (one run per checkpoint), got "
                         f"{run_id.shape}")
    if exclude_run is not None:
        exclude_run = np.asarray(exclude_run, np.int64)
        if exclude_run.shape != (n,):
            raise ValueError(f"exclude_run must be shaped ({n},) (one run per query), got "
                             f"{exclude_run.shape}")
    spec = symmetry.euclidean_spec(len(sizes) - 1)
    nets = [[(w[i], b[i]) for w, b in q_np] for i in range(n)]
    best = np.full(n, np.inf, np.float64)
    best_i = np.full(n, -1, np.int64)
    for r in np.unique(run_id):
        idx = np.flatnonzero(run_id == r)
        _, loc = nearest_neighbors(q_np, [(w[idx], b[idx]) for w, b in c_np], spec,
                                   query_chunk=query_chunk, ref_chunk=ref_chunk)
        for i, q in enumerate(nets):
            if exclude_run is not None and exclude_run[i] == r:
                continue
            j = int(idx[loc[i]])
            c = [(w[j], b[j]) for w, b in c_np]
            perms = symmetry.weight_matching(q, c, max_iter=max_iter)
            d = min(_sq_l2(symmetry.permute(q, perms), c), _sq_l2(q, c))
            if d < best[i]:
                best[i], best_i[i] = d, j
    return np.sqrt(best).astype(np.float32), best_i


def nearest_checkpoint(samples: mlp.Params, checkpoints: mlp.Params,
                       reference: mlp.Params | None = None, *, canonical_mode: str = "exact",
                       align: bool = True, align_max_iter: int = 100,
                       run_id: Any | None = None,
                       k_candidates: int = 8, query_chunk: int = 64, ref_chunk: int = 2048
                       ) -> dict[str, np.ndarray]:
    """Distance of every sample to its nearest checkpoint (module docstring).

    Args:
      samples: ``n`` networks (leading axis), plain weights.
      checkpoints: ``N`` training checkpoints, already aligned to ``reference``.
      reference: the single network the zoo was aligned to; needed when ``align``.
      canonical_mode: canonical form of the geodesic metric (``"exact"`` or ``"thesis"``).
      align: align each sample to ``reference`` first (weight matching).
      run_id: ``(N,)`` run of each checkpoint: refine ``l2`` up to permutation, each run
        aligned on its own (:func:`nearest_per_run_pairwise`); ``None``: the shared
        reference alignment only.

    Returns:
      dict ``l2 (n,)``, ``l2_index (n,)``, ``geodesic (n,)``, ``geodesic_index (n,)``.
    """
    sizes = mlp.validate(samples, batched=True)
    ck_sizes = mlp.validate(checkpoints, batched=True, check_finite=False)
    if sizes != ck_sizes:
        raise ValueError(f"samples have layer sizes {sizes} but the checkpoints have "
                         f"{ck_sizes}; novelty compares networks of one architecture")
    samples = _as_np(samples)
    checkpoints = _as_np(checkpoints)
    if align:
        if reference is None:
            raise ValueError("align=True needs the zoo's reference network (e.g. "
                             "zoo.preprocess(...).reference)")
        samples = _as_np(symmetry.align(samples, _as_np(reference), max_iter=align_max_iter))
    n_layers = len(sizes) - 1
    kw = dict(k_candidates=k_candidates, query_chunk=query_chunk, ref_chunk=ref_chunk)
    if run_id is None:
        l2, l2_i = nearest_neighbors(samples, checkpoints, symmetry.euclidean_spec(n_layers),
                                     **kw)
    else:
        l2, l2_i = nearest_per_run_pairwise(samples, checkpoints, run_id,
                                            max_iter=align_max_iter, query_chunk=query_chunk,
                                            ref_chunk=ref_chunk)
    geo, geo_i = nearest_neighbors(_canonical(samples, canonical_mode),
                                   _canonical(checkpoints, canonical_mode),
                                   symmetry.manifold_spec(n_layers, canonical_mode), **kw)
    return {"l2": l2, "l2_index": l2_i, "geodesic": geo, "geodesic_index": geo_i}


def run_positions(run_id: Any, order: Any | None = None) -> np.ndarray:
    """``(N,)`` position of each checkpoint within its run (0, 1, ...).

    Args:
      run_id: ``(N,)`` run of every checkpoint.
      order: ``(N,)`` sort key within a run (e.g. the zoo's ``step``); ``None`` uses the
        storage order.
    """
    run_id = np.asarray(run_id)
    order = np.arange(run_id.shape[0]) if order is None else np.asarray(order)
    pos = np.empty(run_id.shape[0], np.int64)
    for r in np.unique(run_id):
        idx = np.flatnonzero(run_id == r)
        ranks = np.empty(idx.size, np.int64)
        ranks[np.argsort(order[idx], kind="stable")] = np.arange(idx.size)
        pos[idx] = ranks
    return pos


def checkpoint_spacing(checkpoints: mlp.Params, run_id: Any, *, order: Any | None = None,
                       window: int | None = None, num_queries: int | None = None,
                       seed: int = 0, canonical_mode: str = "exact", pairwise: bool = False,
                       k_candidates: int = 8,
                       query_chunk: int = 64, ref_chunk: int = 2048
                       ) -> dict[str, np.ndarray]:
    """Nearest-neighbour distance of checkpoints to the other checkpoints.

    Args:
      checkpoints: ``N`` aligned checkpoints.
      run_id: ``(N,)`` training run of each.
      order: ``(N,)`` order within a run (zoo ``step``); ``None``: storage order.
      window: exclude same-run neighbours within this many snapshots; ``None`` excludes
        the whole run (distance to *other* runs), ``0`` only the checkpoint itself.
      num_queries: score a random subset of this many checkpoints (``None``: all).
      seed: seed of that subset.
      pairwise: refine ``l2`` up to permutation, each other run aligned on its own
        (:func:`nearest_per_run_pairwise`); needs ``window=None``.

    Returns:
      dict ``l2``, ``l2_index``, ``geodesic``, ``geodesic_index`` (``(q,)`` each) and
      ``query_index (q,)``.
    """
    sizes = mlp.validate(checkpoints, batched=True, check_finite=False)
    checkpoints = _as_np(checkpoints)
    big_n = int(checkpoints[0][0].shape[0])
    run_id = np.asarray(run_id, np.int64)
    if run_id.shape != (big_n,):
        raise ValueError(f"run_id must be shaped ({big_n},), got {run_id.shape}")
    if pairwise and window is not None:
        raise ValueError("pairwise spacing compares a checkpoint with the other runs only: "
                         f"pass window=None (got window={window})")
    pos = run_positions(run_id, order)
    if num_queries is None or int(num_queries) >= big_n:
        qidx = np.arange(big_n)
    else:
        qidx = np.sort(np.random.default_rng(seed).choice(big_n, int(num_queries),
                                                          replace=False))
    n_layers = len(sizes) - 1
    excl = (run_id[qidx], pos[qidx], run_id, pos, window)
    kw = dict(k_candidates=k_candidates, query_chunk=query_chunk, ref_chunk=ref_chunk,
              exclude=excl)
    queries = [(w[qidx], b[qidx]) for w, b in checkpoints]
    if pairwise:
        l2, l2_i = nearest_per_run_pairwise(queries, checkpoints, run_id,
                                            exclude_run=run_id[qidx], query_chunk=query_chunk,
                                            ref_chunk=ref_chunk)
    else:
        l2, l2_i = nearest_neighbors(queries, checkpoints, symmetry.euclidean_spec(n_layers),
                                     **kw)
    canon = _canonical(checkpoints, canonical_mode)
    geo, geo_i = nearest_neighbors(jax.tree.map(lambda a: a[qidx], canon), canon,
                                   symmetry.manifold_spec(n_layers, canonical_mode), **kw)
    return {"l2": l2, "l2_index": l2_i, "geodesic": geo, "geodesic_index": geo_i,
            "query_index": qidx}


def novelty_summary(nearest: dict[str, np.ndarray],
                    spacing: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Scalars for a results table.

    Args:
      nearest: output of :func:`nearest_checkpoint`.
      spacing: optional output of :func:`checkpoint_spacing`.

    Returns:
      For each metric ``m`` in (``l2``, ``geodesic``): ``m_mean``, ``m_std``, ``m_median``,
      ``m_min``; with ``spacing``: ``m_spacing_mean``, ``m_spacing_median``,
      ``m_ratio`` (sample mean / spacing mean) and ``m_frac_below_spacing`` (fraction of
      samples closer to a checkpoint than the median spacing).
    """
    out: dict[str, float] = {}
    for m in ("l2", "geodesic"):
        d = np.asarray(nearest[m], np.float64)
        out[f"{m}_mean"] = float(d.mean())
        out[f"{m}_std"] = float(d.std())
        out[f"{m}_median"] = float(np.median(d))
        out[f"{m}_min"] = float(d.min())
        if spacing is not None:
            s = np.asarray(spacing[m], np.float64)
            s = s[np.isfinite(s)]
            if s.size:
                out[f"{m}_spacing_mean"] = float(s.mean())
                out[f"{m}_spacing_median"] = float(np.median(s))
                out[f"{m}_ratio"] = float(d.mean() / max(s.mean(), 1e-30))
                out[f"{m}_frac_below_spacing"] = float(np.mean(d < np.median(s)))
    return out


def run_coverage(nearest_index: Any, run_id: Any) -> dict[str, float]:
    """How many of the zoo's training runs the samples land near.

    Each sample is attributed to the run of its nearest checkpoint. A generator that covers
    its zoo like random draws from it reaches about as many runs as ``n`` draws of a
    checkpoint would; one that collapses onto a few trajectories reaches fewer. It bears on
    an ensemble of the samples: networks near the same run agree with each other more than
    networks of different runs do.

    Args:
      nearest_index: ``(n,)`` index of each sample's nearest checkpoint (e.g.
        :func:`nearest_checkpoint`'s ``l2_index``).
      run_id: ``(N,)`` training run of each checkpoint.

    Returns:
      ``runs_total`` (runs among the checkpoints), ``runs_covered`` (distinct runs of the
      samples' nearest checkpoints), ``runs_covered_uniform`` (the expected number of
      distinct runs when each of the ``n`` samples is a checkpoint drawn uniformly at random:
      ``sum_r 1 - (1 - p_r)^n`` with ``p_r`` run ``r``'s share of the checkpoints) and
      ``max_run_share`` (the largest fraction of the samples attributed to one run).

    Raises:
      ValueError: an empty or non-integer ``nearest_index``, an index outside the
        checkpoints, or a ``run_id`` that is not one-dimensional.
    """
    run_id = np.asarray(run_id)
    idx = np.asarray(nearest_index)
    if run_id.ndim != 1 or run_id.size == 0:
        raise ValueError(f"run_id must be a non-empty (N,) array of the checkpoints' runs, "
                         f"got shape {run_id.shape}")
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"nearest_index must be a non-empty (n,) integer array (e.g. "
                         f"nearest_checkpoint(...)['l2_index']), got {idx.dtype} {idx.shape}")
    if idx.min() < 0 or idx.max() >= run_id.size:
        raise ValueError(f"nearest_index holds {int(idx.min())}..{int(idx.max())} but there "
                         f"are {run_id.size} checkpoints; pass the run_id of the same "
                         f"checkpoints the nearest neighbours were searched in")
    _, counts = np.unique(run_id, return_counts=True)
    share = counts / run_id.size
    n = idx.size
    _, hits = np.unique(run_id[idx], return_counts=True)
    return {"runs_total": int(counts.size), "runs_covered": int(hits.size),
            "runs_covered_uniform": float(np.sum(1.0 - (1.0 - share) ** n)),
            "max_run_share": float(hits.max() / n)}
