"""``neuron_transformer``: a wide transformer over hidden-neuron tokens (equivariant).

Every hidden neuron of the MLP is one token; a token carries *everything* about its neuron
that does not index another permutable neuron, so the tokens are wide and the model is
cheap:

* a first-hidden-layer neuron ``j``: its fan-in row and bias ``[W_0[j], b_0[j]]``
  (``d_0 + 1`` numbers; the input neurons carry no symmetry);
* a last-hidden-layer neuron ``j``: its fan-out column ``W_(L-1)[:, j]`` (``d_L`` numbers;
  nor do the output neurons);
* any other hidden neuron: its bias;
* one *global* token per network: the output biases ``b_(L-1)`` and, in exact canonical
  mode, ``log_scale``.

784-10-10 is 10 tokens of ``785 + 10`` numbers plus the global token. Weights between two
hidden layers (both sides permutable, e.g. ``W_1`` of 30-16-16-2) are *edges*: their
embedding adds a per-head bias to the attention logit of the pair they connect (both
directions) and a value to the message, and an edge head reads each new weight from the two
token states and its own embedding.

Every token of a hidden layer gets the same type embedding, so the model is exactly
equivariant to permutations of hidden neurons and runs on any hidden width (784-32-10 after
training on 784-10-10); a layer's attention is full self-attention over all tokens with a
learned per-head bias for each relation (same layer, edge forward, edge backward, other
layer, global). Token embeddings and heads are per hidden layer, so the depth is fixed.

Time: sinusoidal features -> MLP -> adaptive LayerNorm (scale and shift) before the
attention and the MLP of every block (as DiT does). Heads are zero-initialised: the initial
prediction is the de-standardized ``z_t`` (``input_skip``) or zero (the per-layer data
mean).

Unlike :mod:`compact_rt`, whose node width bounds the rank of a first-layer neuron's
784-wide prediction (width 32: a 32-dimensional subspace shared by all neurons), the tokens
here are ``width`` wide (default 128) at about the cost of the flat ``mlp`` field.

Config fields (``config.model.neuron_transformer``): ``num_layers``, ``width``,
``num_heads``, ``mlp_ratio``, ``time_features``, ``standardize`` (none | per_layer),
``fourier_features``, ``fourier_scale`` (of edge weights), ``input_skip`` (off by default:
a first-layer row's prediction is a ``width``-rank map of the token, which cannot cancel the
prior noise a skip adds; see :class:`~weightflow_jax.models.base.ModuleField`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.models.base import (GRAPH_STANDARDIZE, CoordSpec, ModuleField,
                                        Standardizer, fourier_features, graph_stats_mode)
from weightflow_jax.models.conditioning import time_condition_features
from weightflow_jax.models.layers import EMBED_STD
from weightflow_jax.symmetry import Canonical

__all__ = ["NeuronTransformer", "NeuronTransformerField", "token_layout", "default_config",
           "build", "stats_mode", "STANDARDIZE", "RELATIONS"]

STANDARDIZE = GRAPH_STANDARDIZE
# Relation of a token pair (receiver, sender), each with a learned per-head logit bias.
RELATIONS = ("same_layer", "edge_forward", "edge_backward", "other_layer", "global")


def default_config() -> ml_collections.ConfigDict:
    """4 layers of width 128: on 2 CPU cores (MNIST, 180 s) it learned as well as width 256
    at 1.7x its step rate (docs/learning/mnist_geometric_nt_recipe.md)."""
    return ml_collections.ConfigDict(dict(
        num_layers=4, width=128, num_heads=4, mlp_ratio=2, time_features=64,
        standardize="per_layer", fourier_features=0, fourier_scale=1.0, input_skip=False))


@functools.lru_cache(maxsize=64)
def token_layout(sizes: tuple[int, ...]) -> dict[str, Any]:
    """Static token layout of one network ``sizes = (d_0, ..., d_L)`` (numpy, cached).

    Returns:
      ``offsets``: start of each hidden layer's tokens (hidden layer ``l`` = 1..L-1 at
      ``offsets[l - 1]``); ``num_tokens`` = hidden neurons + 1 (the global token last);
      ``relation`` ``(N, N)`` int32 index into :data:`RELATIONS` of (receiver, sender).
    """
    hidden = sizes[1:-1]
    if not hidden:
        raise ValueError(f"neuron_transformer needs at least one hidden layer; "
                         f"{mlp.format_arch(sizes)} has none (use model.name=mlp)")
    offsets = np.concatenate([[0], np.cumsum(hidden)]).astype(int)
    n_tok = int(offsets[-1]) + 1
    layer_of = np.concatenate([np.full((w,), i) for i, w in enumerate(hidden)] + [[-1]])
    rel = np.full((n_tok, n_tok), RELATIONS.index("other_layer"), np.int32)
    li, lj = layer_of[:, None], layer_of[None, :]
    rel[li == lj] = RELATIONS.index("same_layer")
    rel[(li == lj + 1) & (lj >= 0)] = RELATIONS.index("edge_forward")   # receiver one above
    rel[(lj == li + 1) & (li >= 0)] = RELATIONS.index("edge_backward")
    rel[-1, :] = RELATIONS.index("global")
    rel[:, -1] = RELATIONS.index("global")
    return {"offsets": tuple(int(o) for o in offsets), "num_tokens": n_tok, "relation": rel}


class _Block(nn.Module):
    """Pre-LN transformer block with adaLN time conditioning and edge-aware attention."""

    width: int
    num_heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, h, cond, rel, edge_bias, edge_value):
        d, nh = self.width, self.num_heads
        dh = d // nh
        n, n_tok, _ = h.shape
        mod = nn.Dense(4 * d, kernel_init=nn.initializers.zeros, name="ada")(nn.gelu(cond))
        s1, b1, s2, b2 = jnp.split(mod[:, None, :], 4, axis=-1)
        x = nn.LayerNorm(use_scale=False, use_bias=False, name="ln1")(h) * (1 + s1) + b1
        qkv = nn.Dense(3 * d, name="qkv")(x).reshape(n, n_tok, 3, nh, dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nihd,njhd->nhij", q, k) / np.sqrt(dh)
        rel_bias = self.param("relation_bias", nn.initializers.zeros, (len(RELATIONS), nh))
        logits = logits + jnp.transpose(rel_bias[rel], (2, 0, 1))[None]
        if edge_bias is not None:
            logits = logits + jnp.transpose(
                nn.Dense(nh, use_bias=False, name="edge_bias")(edge_bias), (0, 3, 1, 2))
        att = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("nhij,njhd->nihd", att, v)
        if edge_value is not None:
            ev = edge_value.reshape(n, n_tok, n_tok, nh, dh)
            out = out + jnp.einsum("nhij,nijhd->nihd", att, ev)
        h = h + nn.Dense(d, name="attn_out")(out.reshape(n, n_tok, d))
        x = nn.LayerNorm(use_scale=False, use_bias=False, name="ln2")(h) * (1 + s2) + b2
        u = nn.Dense(self.mlp_ratio * d, name="mlp_in")(x)
        return h + nn.Dense(d, name="mlp_out")(nn.gelu(u))


class NeuronTransformer(nn.Module):
    """The neuron-token transformer on standardized coordinates (a batch ``Canonical``).

    Attributes:
      sizes: the training architecture (its input/output widths and depth are fixed; hidden
        widths may change at apply time).
      num_layers, width, num_heads, mlp_ratio, time_features: transformer size.
      fourier_features, fourier_scale: random Fourier features of hidden-to-hidden weights.
      has_scale: coordinates carry ``log_scale`` (read and written by the global token).
    """

    sizes: tuple[int, ...]
    num_layers: int = 4
    width: int = 256
    num_heads: int = 8
    mlp_ratio: int = 2
    time_features: int = 64
    fourier_features: int = 0
    fourier_scale: float = 1.0
    has_scale: bool = False

    @nn.compact
    def __call__(self, z: Canonical, t: jax.Array, c: jax.Array | None = None) -> Canonical:
        sizes = (int(z.layers[0][0].shape[-1]),) + tuple(int(w.shape[-2]) for w, _ in z.layers)
        base = tuple(self.sizes)
        if len(sizes) != len(base) or sizes[0] != base[0] or sizes[-1] != base[-1]:
            raise ValueError(
                f"neuron_transformer was built for {mlp.format_arch(base)} networks: input "
                f"width, output width and depth are fixed, only hidden widths may change; got "
                f"{mlp.format_arch(sizes)}")
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not divisible by num_heads="
                             f"{self.num_heads}")
        d, n_hidden = self.width, len(sizes) - 2
        n = z.layers[0][0].shape[0]
        lay = token_layout(sizes)
        off, n_tok = lay["offsets"], lay["num_tokens"]
        dtype = jnp.result_type(z.layers[0][0], jnp.float32)

        temb = time_condition_features(t, self.time_features, c)
        cond = nn.Dense(d, name="time_mlp_out")(nn.gelu(nn.Dense(d, name="time_mlp_in")(temb)))

        # ---- tokens ----
        toks = []
        for l in range(1, n_hidden + 1):
            w_in, b_in = z.layers[l - 1]
            parts = [w_in, b_in[..., None]] if l == 1 else [b_in[..., None]]
            if l == n_hidden:
                parts.append(jnp.swapaxes(z.layers[-1][0], -1, -2))  # fan-out columns
            feat = jnp.concatenate(parts, axis=-1)
            type_emb = self.param(f"type_hidden{l}", nn.initializers.normal(EMBED_STD), (d,),
                                  dtype)
            toks.append(nn.Dense(d, name=f"embed_hidden{l}")(feat) + type_emb)
        g_parts = [z.layers[-1][1]] + ([z.log_scale[:, None]] if self.has_scale else [])
        g_emb = self.param("type_global", nn.initializers.normal(EMBED_STD), (d,), dtype)
        toks.append(nn.Dense(d, name="embed_global")(jnp.concatenate(g_parts, -1))[:, None]
                    + g_emb)
        h = jnp.concatenate(toks, axis=1) + nn.Dense(d, name="token_time")(cond)[:, None]

        # ---- hidden-to-hidden weights as edges (dense (n, N, N, .) tensors) ----
        edge_emb = {}
        edge_bias_in = edge_value = None
        if n_hidden >= 2:
            eb = jnp.zeros((n, n_tok, n_tok, d), dtype)
            ev = jnp.zeros((n, n_tok, n_tok, d), dtype)
            for l in range(1, n_hidden):  # W_l connects hidden layer l -> l + 1
                w = z.layers[l][0]  # (n, d_{l+1}, d_l): receiver above, sender below
                e = nn.Dense(d, name=f"edge_embed{l}")(
                    fourier_features(w, self.fourier_features, self.fourier_scale))
                edge_emb[l] = e  # (n, d_{l+1}, d_l, D)
                r0, r1 = off[l], off[l] + sizes[l + 1]
                s0, s1 = off[l - 1], off[l - 1] + sizes[l]
                dirs = self.param(f"edge_dir{l}", nn.initializers.normal(EMBED_STD), (2, d),
                                  dtype)
                fwd = nn.gelu(e + dirs[0])
                bwd = nn.gelu(jnp.swapaxes(e, 1, 2) + dirs[1])
                value = nn.Dense(d, use_bias=False, name=f"edge_value{l}")
                eb = eb.at[:, r0:r1, s0:s1].set(fwd).at[:, s0:s1, r0:r1].set(bwd)
                ev = ev.at[:, r0:r1, s0:s1].set(value(fwd)).at[:, s0:s1, r0:r1].set(value(bwd))
            edge_bias_in, edge_value = eb, ev

        rel = jnp.asarray(lay["relation"])
        for i in range(self.num_layers):
            h = _Block(d, self.num_heads, self.mlp_ratio, name=f"block{i}")(
                h, cond, rel, edge_bias_in, edge_value)
        h = nn.LayerNorm(name="out_ln")(h)

        # ---- heads (zero-initialised) ----
        zero = nn.initializers.zeros
        outs = {}
        for l in range(1, n_hidden + 1):
            ht = h[:, off[l - 1]:off[l]]
            n_in = sizes[0] + 1 if l == 1 else 1
            n_out = sizes[-1] if l == n_hidden else 0
            outs[l] = nn.Dense(n_in + n_out, kernel_init=zero, name=f"head_hidden{l}")(ht)
        g = nn.Dense(sizes[-1] + int(self.has_scale), kernel_init=zero, name="head_global")(
            h[:, -1])
        layers = []
        for l in range(1, n_hidden + 1):
            o = outs[l]
            if l == 1:
                layers.append((o[..., :sizes[0]], o[..., sizes[0]]))
            else:
                w = edge_emb[l - 1]
                a = nn.Dense(d, name=f"edge_head{l - 1}_recv")(h[:, off[l - 1]:off[l]])
                b = nn.Dense(d, name=f"edge_head{l - 1}_send")(h[:, off[l - 2]:off[l - 1]])
                u = nn.gelu(a[:, :, None] + b[:, None] + w)
                w_out = nn.Dense(1, kernel_init=zero, name=f"edge_head{l - 1}_out")(u)[..., 0]
                layers.append((w_out, o[..., 0]))
        last = outs[n_hidden]
        w_last = jnp.swapaxes(last[..., -sizes[-1]:], -1, -2)  # (n, d_L, d_{L-1})
        layers.append((w_last, g[:, :sizes[-1]]))
        scale = g[:, sizes[-1]] if self.has_scale else None
        return Canonical(layers, scale)


class NeuronTransformerField(ModuleField):
    """:class:`NeuronTransformer` with per-layer standardization, as a field on coordinates."""

    name = "neuron_transformer"
    equivariant = True

    def __init__(self, spec: CoordSpec, stats: Standardizer, module: NeuronTransformer,
                 input_skip: bool):
        super().__init__(spec, stats, module, input_skip)
        self.max_hidden_layers = len(spec.sizes) - 2

    def check_sizes(self, sizes) -> None:
        super().check_sizes(sizes)
        sizes = mlp.parse_arch(sizes)
        if len(sizes) != len(self.spec.sizes):
            raise ValueError(
                f"field 'neuron_transformer' was trained on {len(self.spec.sizes) - 2} hidden "
                f"layers ({mlp.format_arch(self.spec.sizes)}); {mlp.format_arch(sizes)} has "
                f"{len(sizes) - 2}: only hidden widths may change")


stats_mode = graph_stats_mode


def build(cfg: ml_collections.ConfigDict, spec: CoordSpec,
          stats: Standardizer) -> NeuronTransformerField:
    """A :class:`NeuronTransformerField` for ``spec`` from ``config.model.neuron_transformer``."""
    token_layout(tuple(spec.sizes))  # a network without hidden layers is refused here
    module = NeuronTransformer(
        sizes=tuple(spec.sizes), num_layers=int(cfg.num_layers), width=int(cfg.width),
        num_heads=int(cfg.num_heads), mlp_ratio=int(cfg.mlp_ratio),
        time_features=int(cfg.time_features), fourier_features=int(cfg.fourier_features),
        fourier_scale=float(cfg.fourier_scale), has_scale=spec.has_scale)
    return NeuronTransformerField(spec, stats, module, bool(cfg.input_skip))
