"""Layers the fields share: the relational-transformer layer, its scanned blocks, time features.

* :class:`RTLayer`, :func:`segment_softmax` — one relational-transformer layer (below), used
  by ``rt`` (:mod:`.rt`) and ``compact_rt`` (:mod:`.compact_rt`); ``_SparseBlock`` /
  ``_DenseBlock`` (one scanned layer plus the global-state update) and ``_scan_blocks``
  stack it.
* :func:`sinusoidal_embedding` (time features) and :data:`EMBED_STD` (init std of learned
  embeddings) — used by every field.

Relational-transformer layer (Diao & Loynd 2023; Kofinas et al. 2024) on neural graphs.

A layer updates node states ``h_i`` and *directed pair* states ``e_ij`` (the state node ``i``
uses when it attends to node ``j``)::

    q_ij = Wq h_i + Wq' e_ij        k_ij = Wk h_j + Wk' e_ij
    v_ij = (Wv h_j) * (Wv'' e_ij) + Wv' e_ij
    a_ij = softmax_j(<q_ij, k_ij> / sqrt(d_head))          (per head)
    h_i <- LN(h_i + Wo sum_j a_ij v_ij);   h_i <- LN(h_i + MLP(h_i))
    e_ij <- LN(e_ij + MLP(e_ij, e_ji, h_i, h_j))           (with the updated h)

A per-graph conditioning vector (time embedding, plus the global state when present) is
projected and added to every node at the start of the layer. The first layer of the edge MLP
is applied as ``A e_ij + B e_ji + C h_i + D h_j + c`` (equal to a Dense on the concatenation,
but ``C h``/``D h`` are computed per node, and ``B e_ji`` is the projection ``B e`` read at the
reverse pair, so no concatenated or transposed edge tensor is formed).

The same parameters serve two evaluation modes:

* :meth:`RTLayer.sparse` — pairs are the *real* edges of the neural graph in both directions:
  for weight ``s -> r`` (``s`` in layer ``l``, ``r`` in layer ``l + 1``) node ``r`` attends to
  ``s`` with state ``e_fwd`` and ``s`` attends to ``r`` with ``e_bwd``. Segment ops, cost
  ``O(E)``. Edge states are stored as one ``(2E, D)`` array ``[e_fwd; e_bwd]``.
* :meth:`RTLayer.dense` — pairs are all ``M x M`` node pairs of each graph (``(G, M, M, D)``
  tensor, like the reference implementations), with an attention mask.

With the dense mask restricted to the real edges the two modes compute the same function
(tested); the reference-like dense model attends over all pairs instead.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["RTLayer", "segment_softmax", "sinusoidal_embedding", "EMBED_STD"]

# Init std of the learned positional / direction / no-edge embeddings: the scale of the
# weights themselves (thesis prior std 0.1), so the embeddings do not drown the weight signal.
EMBED_STD = 0.1

_NEG = -1e30


def segment_softmax(logits: jax.Array, segment_ids: jax.Array, num_segments: int,
                    mask: jax.Array | None = None) -> jax.Array:
    """Softmax over entries sharing a segment id; masked entries get weight 0.

    Args:
      logits: ``(M, H)`` (one logit per message and head).
      segment_ids: int ``(M,)`` in ``[0, num_segments)``.
      num_segments: static number of segments.
      mask: optional bool ``(M,)``; a segment whose entries are all masked gets all zeros
        (never NaN).

    Returns:
      ``(M, H)`` weights summing to 1 over each segment's unmasked entries.
    """
    if mask is not None:
        logits = jnp.where(mask[:, None], logits, _NEG)
    seg_max = jax.ops.segment_max(logits, segment_ids, num_segments)
    seg_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(seg_max), seg_max, 0.0))
    ex = jnp.exp(logits - seg_max[segment_ids])
    if mask is not None:
        ex = jnp.where(mask[:, None], ex, 0.0)
    denom = jax.ops.segment_sum(ex, segment_ids, num_segments)
    denom = jnp.maximum(denom, jnp.finfo(ex.dtype).tiny)
    return ex / denom[segment_ids]


class RTLayer(nn.Module):
    """One relational-transformer layer; call :meth:`sparse` or :meth:`dense`.

    Attributes:
      width: node and edge state width ``D``.
      num_heads: attention heads (``D`` must be divisible by it).
      mlp_ratio: hidden width of the node and edge MLPs is ``mlp_ratio * D``.
    """

    width: int
    num_heads: int
    mlp_ratio: int = 2

    def setup(self):
        d, dh = self.width, self.mlp_ratio * self.width
        # Projections are fused into few wide matmuls (fewer, larger kernels on CPU):
        # node_qkv = [Wq | Wk | Wv] (no bias), edge_qkvg = [Wq' | Wk' | Wv' | Wv''].
        self.cond = nn.Dense(d, name="cond")
        self.node_qkv = nn.Dense(3 * d, use_bias=False, name="node_qkv")
        self.edge_qkvg = nn.Dense(4 * d, name="edge_qkvg")
        self.attn_out = nn.Dense(d, name="attn_out")
        self.ln_attn = nn.LayerNorm(name="ln_attn")
        self.node_mlp_in = nn.Dense(dh, name="node_mlp_in")
        self.node_mlp_out = nn.Dense(d, name="node_mlp_out")
        self.ln_node = nn.LayerNorm(name="ln_node")
        # First edge-MLP layer on (e_ij, e_ji, h_i, h_j) = [A | B] e + [C | D] h + bias.
        self.edge_mix = nn.Dense(2 * dh, use_bias=False, name="edge_mix")
        self.edge_node = nn.Dense(2 * dh, use_bias=False, name="edge_node")
        self.edge_bias = self.param("edge_mlp_bias", nn.initializers.zeros, (dh,))
        self.edge_mlp_out = nn.Dense(d, name="edge_mlp_out")
        self.ln_edge = nn.LayerNorm(name="ln_edge")

    def _heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[:-1] + (self.num_heads, self.width // self.num_heads))

    def _node_update(self, h: jax.Array, msg: jax.Array) -> jax.Array:
        h = self.ln_attn(h + self.attn_out(msg))
        return self.ln_node(h + self.node_mlp_out(nn.gelu(self.node_mlp_in(h))))

    def sparse(self, h: jax.Array, e: jax.Array, cond: jax.Array, node_graph: jax.Array,
               recv: jax.Array, send: jax.Array, msg_mask: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
        """Layer over the real edges in both directions.

        Args:
          h: node states ``(N, D)``.
          e: directed edge states ``(2E, D)``: rows ``[0, E)`` are ``e_fwd`` (pair
            ``(receiver, sender)``), rows ``[E, 2E)`` are ``e_bwd`` (pair ``(sender,
            receiver)``).
          cond: per-graph conditioning ``(G, D)``.
          node_graph: int ``(N,)`` graph of each node.
          recv, send: int ``(2E,)``: the attending node ``i`` and attended node ``j`` of each
            directed pair (``[receivers; senders]`` and ``[senders; receivers]``).
          msg_mask: bool ``(2E,)``, ``False`` on padding edges.

        Returns:
          Updated ``(h, e)`` with the same shapes.
        """
        n = h.shape[0]
        two_e = e.shape[0]
        h = h + self.cond(cond)[node_graph]
        qn, kn, vn = jnp.split(self.node_qkv(h), 3, axis=-1)
        qe, ke, ve, ge = jnp.split(self.edge_qkvg(e), 4, axis=-1)
        q = qn[recv] + qe
        k = kn[send] + ke
        v = vn[send] * ge + ve
        scale = 1.0 / jnp.sqrt(self.width // self.num_heads).astype(h.dtype)
        logits = jnp.sum(self._heads(q) * self._heads(k), axis=-1) * scale  # (2E, H)
        attn = segment_softmax(logits, recv, n, msg_mask)
        msg = jax.ops.segment_sum(attn[..., None] * self._heads(v), recv, n)
        h = self._node_update(h, msg.reshape(n, self.width))
        a_self, a_rev = jnp.split(self.edge_mix(e), 2, axis=-1)
        c_i, c_j = jnp.split(self.edge_node(h), 2, axis=-1)
        # e_ji of row m is row m +- E: roll the (linear) projection instead of e itself.
        u = a_self + jnp.roll(a_rev, two_e // 2, axis=0) + c_i[recv] + c_j[send] + self.edge_bias
        e = self.ln_edge(e + self.edge_mlp_out(nn.gelu(u)))
        return h, e

    def dense(self, h: jax.Array, e: jax.Array, cond: jax.Array, attn_mask: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
        """Layer over all node pairs of each graph.

        Args:
          h: node states ``(G, M, D)`` (``M`` node slots per graph).
          e: pair states ``(G, M, M, D)``; ``e[g, i, j]`` is the state ``i`` uses to attend
            to ``j``.
          cond: per-graph conditioning ``(G, D)``.
          attn_mask: bool ``(G, M, M)``: which ``j`` node ``i`` may attend to. Rows that are
            all ``False`` (empty slots) get a zero message.

        Returns:
          Updated ``(h, e)`` with the same shapes.
        """
        g, m, d = h.shape
        h = h + self.cond(cond)[:, None, :]
        qn, kn, vn = jnp.split(self.node_qkv(h), 3, axis=-1)
        qe, ke, ve, ge = jnp.split(self.edge_qkvg(e), 4, axis=-1)
        q = qn[:, :, None, :] + qe
        k = kn[:, None, :, :] + ke
        v = vn[:, None, :, :] * ge + ve
        scale = 1.0 / jnp.sqrt(self.width // self.num_heads).astype(h.dtype)
        logits = jnp.sum(self._heads(q) * self._heads(k), axis=-1) * scale  # (G, M, M, H)
        logits = jnp.where(attn_mask[..., None], logits, _NEG)
        attn = jax.nn.softmax(logits, axis=2)
        attn = jnp.where(attn_mask[..., None], attn, 0.0)
        msg = jnp.sum(attn[..., None] * self._heads(v), axis=2)  # (G, M, H, dh)
        h = self._node_update(h, msg.reshape(g, m, d))
        a_self, a_rev = jnp.split(self.edge_mix(e), 2, axis=-1)
        c_i, c_j = jnp.split(self.edge_node(h), 2, axis=-1)
        u = (a_self + jnp.swapaxes(a_rev, 1, 2) + c_i[:, :, None, :] + c_j[:, None, :, :]
             + self.edge_bias)
        e = self.ln_edge(e + self.edge_mlp_out(nn.gelu(u)))
        return h, e


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0,
                         scale: float = 1000.0) -> jax.Array:
    """Transformer-style sinusoidal features of ``t`` (meant for ``t`` in ``[0, 1]``).

    Args:
      t: ``(G,)`` times.
      dim: even number of features.
      max_period, scale: frequencies ``scale * max_period^(-k / (dim/2))``.

    Returns:
      ``(G, dim)``: ``[sin(f t), cos(f t)]``.
    """
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = scale * jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class _Block(nn.Module):
    """One RT layer plus (when globals are present) the global-state update; scanned."""

    width: int
    num_heads: int
    mlp_ratio: int
    has_globals: bool

    def setup(self):
        d = self.width
        self.rt = RTLayer(d, self.num_heads, self.mlp_ratio, name="rt")
        if self.has_globals:
            self.global_mlp_in = nn.Dense(2 * d, name="global_mlp_in")
            self.global_mlp_out = nn.Dense(d, name="global_mlp_out")
            self.global_ln = nn.LayerNorm(name="global_ln")

    def _update_globals(self, gs: jax.Array, pooled: jax.Array) -> jax.Array:
        u = self.global_mlp_in(jnp.concatenate([gs, pooled], axis=-1))
        return self.global_ln(gs + self.global_mlp_out(nn.gelu(u)))


class _SparseBlock(_Block):
    """Scanned block, sparse mode: carry ``(h (N, D), e (2E, D), gs (G, D) | None)``."""

    def __call__(self, carry, consts):
        h, e, gs = carry
        temb, node_graph, node_w, recv, send, msg_mask = consts
        cond = temb if gs is None else temb + gs
        h, e = self.rt.sparse(h, e, cond, node_graph, recv, send, msg_mask)
        if gs is not None:
            g_n = gs.shape[0]
            s = jax.ops.segment_sum(h * node_w, node_graph, g_n)
            c = jax.ops.segment_sum(node_w, node_graph, g_n)
            gs = self._update_globals(gs, s / jnp.maximum(c, 1.0))
        return (h, e, gs), None


class _DenseBlock(_Block):
    """Scanned block, dense mode: carry ``(h (G, M, D), e (G, M, M, D), gs | None)``."""

    def __call__(self, carry, consts):
        h, e, gs = carry
        temb, attn_mask, slot_w = consts
        cond = temb if gs is None else temb + gs
        h, e = self.rt.dense(h, e, cond, attn_mask)
        if gs is not None:
            pooled = jnp.sum(h * slot_w, axis=1) / jnp.maximum(jnp.sum(slot_w, axis=1), 1.0)
            gs = self._update_globals(gs, pooled)
        return (h, e, gs), None


def _scan_blocks(cls, remat: bool, num_layers: int):
    """``nn.scan`` over layers: parameters get a leading layer axis, and the layer body is
    compiled once whatever ``num_layers`` is."""
    if remat:
        cls = nn.remat(cls)
    return nn.scan(cls, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=nn.broadcast, length=num_layers)
