"""Guidance that trains, on a toy pair of tasks, and fine-tuning from the balanced form.

The flow is a field that predicts one fixed task-A network (what a field trained to zero
loss on a one-network data set gives), so unguided sampling returns that network; guided by
task B's training loss, the sampler must carry it to a task-B network.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from weightflow_jax import evaluation, flows, mlp, sampling, symmetry

SIZES = (4, 8, 2)


def _task(seed, rule, n=512):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (n, 4)), np.float32)
    return x, rule(x).astype(np.int32)


def _rule_a(x):
    return x[:, 0] > 0


def _rule_b(x):
    return x[:, 1] + x[:, 2] > 0


@functools.lru_cache(maxsize=None)
def _setup():
    xa, ya = _task(0, _rule_a)
    params = mlp.init(jax.random.key(1), SIZES, w_std=None)
    opt = optax.adam(3e-2)
    state = opt.init(params)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
            mlp.forward(q, xa), ya).mean())(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(300):
        params, state = step(params, state)
    space = flows.FlowSpace("geometric", SIZES)
    target = space.encode(params)

    def predict(x, t):  # every state -> the task-A network
        n = x.layers[0][0].shape[0]
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), target)

    return space, predict, params


def _error(params, rule, seed=7):
    x, y = _task(seed, rule, 2000)
    acc, _ = evaluation.accuracy_and_loss(params, x, y)
    return 1.0 - float(np.mean(acc))


def test_guided_sampling_learns_the_second_task_and_unguided_does_not():
    space, predict, net_a = _setup()
    assert _error(jax.tree.map(lambda a: a[None], net_a), _rule_a) < 0.05
    base_b = _error(jax.tree.map(lambda a: a[None], net_a), _rule_b)
    assert base_b > 0.3                                     # task A's network fails on B
    unguided = sampling.sample(space, predict, jax.random.key(0), 8, steps=32)
    assert _error(unguided, _rule_b) > 0.3
    assert _error(unguided, _rule_a) < 0.05
    xb, yb = _task(3, _rule_b)
    guide = sampling.make_guidance(space, xb, yb, 20.0, batch_size=128)
    guided = sampling.sample(space, predict, jax.random.key(0), 8, steps=64, guidance=guide,
                             flow_velocity="displacement", output_scale="learn")
    assert _error(guided, _rule_b) < base_b - 0.2           # a clear margin
    assert float(symmetry.imbalance(guided)) < 1e-3         # written balanced


def test_pull_of_the_conditional_velocity_undoes_guidance_at_the_end():
    """The same guidance with the field's conditional velocity ends on the field's endpoint."""
    space, predict, _ = _setup()
    xb, yb = _task(3, _rule_b)
    guide = sampling.make_guidance(space, xb, yb, 20.0, batch_size=128)
    pulled = sampling.sample(space, predict, jax.random.key(0), 8, steps=64, guidance=guide,
                             flow_velocity="conditional")
    free = sampling.sample(space, predict, jax.random.key(0), 8, steps=64, guidance=guide,
                           flow_velocity="displacement")
    assert _error(free, _rule_b) < _error(pulled, _rule_b) - 0.1


def test_finetuning_from_both_forms_starts_from_the_same_function_and_trains():
    """Balanced and exact decodings compute the same function, and SGD trains both.

    Not asserted: that the balanced form is never slower. On this toy it is *slower*: the
    exact form's unit-norm hidden rows are strong features for task B, while balancing
    shrinks the incoming weights of the neurons task A barely used (outgoing norms 0.15 ->
    incoming 0.3); SGD lr 0.1 reaches 0.78 vs 0.96 after 64 steps (measured, see the
    fashion_transfer table for the MNIST -> Fashion-MNIST comparison).
    """
    space, predict, _ = _setup()
    coords = sampling.sample_coords(space, predict, jax.random.key(0), 8, steps=16)
    bal = sampling.decode_samples(space, coords, representative="balanced")
    exact = sampling.decode_samples(space, coords, representative="exact")
    assert float(symmetry.imbalance(bal)) < 1e-3 < float(symmetry.imbalance(exact))
    xb, yb = _task(3, _rule_b, 2048)
    xt, yt = _task(8, _rule_b, 1024)
    kw = dict(key=jax.random.key(0), epochs=2, batch_size=32, optimizer="sgd",
              learning_rate=0.1, momentum=0.0, eval_steps=range(4, 129, 4))
    cb = evaluation.finetune_curves(bal, xb, yb, xt, yt, **kw)
    ce = evaluation.finetune_curves(exact, xb, yb, xt, yt, **kw)
    np.testing.assert_array_equal(cb["step"], ce["step"])
    acc_b, acc_e = cb["step_accuracy"].mean(0), ce["step_accuracy"].mean(0)
    np.testing.assert_allclose(acc_b[0], acc_e[0], atol=1e-6)   # same function at step 0
    assert acc_b[0] < 0.7 and acc_b[-1] > 0.9 and acc_e[-1] > 0.9
    t_b = evaluation.seconds_to_reach(cb, 0.9)
    assert t_b is not None and 0 < t_b <= cb["step_seconds"][-1]
    assert evaluation.seconds_to_reach(cb, 0.4) == 0.0
    assert evaluation.seconds_to_reach(cb, 1.01) is None


def test_output_scale_options_and_errors():
    space, predict, _ = _setup()
    xb, yb = _task(3, _rule_b)
    fixed = sampling.sample_coords(space, predict, jax.random.key(0), 4, steps=8,
                                   output_scale=2.0)
    np.testing.assert_allclose(fixed.log_scale, np.log(2.0), rtol=1e-6)
    own = sampling.sample_coords(space, predict, jax.random.key(0), 4, steps=8)
    # a temperature: the same predictions as the flow's own output scale
    x, _ = _task(9, _rule_a, 256)
    pf = jax.vmap(mlp.forward, in_axes=(0, None))(space.decode(fixed), x)
    po = jax.vmap(mlp.forward, in_axes=(0, None))(space.decode(own), x)
    np.testing.assert_array_equal(np.argmax(pf, -1), np.argmax(po, -1))
    with pytest.raises(ValueError, match="output_scale='learn' lets the guidance"):
        sampling.sample_coords(space, predict, jax.random.key(0), 4, steps=8,
                               output_scale="learn")
    with pytest.raises(ValueError, match="output_scale must be 'flow', 'learn' or a positive"):
        sampling.sample_coords(space, predict, jax.random.key(0), 4, steps=8,
                               output_scale=-1.0)
    with pytest.raises(ValueError, match="unknown guidance mode 'x'"):
        sampling.make_guidance(space, xb, yb, 1.0, mode="x")
    with pytest.raises(ValueError, match="unknown flow_velocity 'x'"):
        sampling.sample_coords(space, predict, jax.random.key(0), 4, steps=8,
                               flow_velocity="x")


def test_displacement_equals_conditional_on_an_exact_conditional_path():
    """A field predicting one endpoint: both velocities follow the same geodesic."""
    space, predict, _ = _setup()
    a = sampling.sample_coords(space, predict, jax.random.key(4), 4, steps=16,
                               flow_velocity="displacement")
    b = sampling.sample_coords(space, predict, jax.random.key(4), 4, steps=16)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, atol=2e-4)


def test_samples_npz_records_the_representative(tmp_path):
    space, predict, _ = _setup()
    nets = sampling.sample(space, predict, jax.random.key(0), 3, steps=4)
    path = sampling.save_samples_npz(str(tmp_path / "s.npz"), nets, representative="balanced")
    assert sampling.samples_representative(path) == "balanced"
    old = sampling.save_samples_npz(str(tmp_path / "o.npz"), nets)
    assert sampling.samples_representative(old) is None
    assert sampling.load_samples_npz(path)[0][0].shape == (3, 8, 4)
