"""Benchmark: relational-transformer training step, sparse vs dense attention.

Measures throughput of one full training step (MLP batch -> neural graph -> forward ->
backward -> Adam update, all in one ``jax.jit``) in networks per second, and peak memory, for
the sparse (real edges, segment ops) and dense (all node pairs, like the reference code)
attention modes of :class:`weightflow_jax.models.VectorField`, and prints the ratio.

Peak memory is reported two ways:

* ``xla``: from ``jitted.lower(...).compile().memory_analysis()`` — arguments + outputs +
  temporaries - aliased bytes of the compiled step (what XLA plans to allocate);
* ``rss``: the process's peak resident set size (``resource.getrusage(RUSAGE_SELF)
  .ru_maxrss``). Each mode runs in its own subprocess (unless ``--no-isolate``) so the RSS
  peaks do not mix.

Thesis size (default)::

    .venv/bin/python -m experiments.bench_rt --arch 784-10-10 --batch 8 --width 32 \
        --layers 5 --heads 4 --steps 3 --dense-batch 1 --dense-steps 1

The dense mode does not fit batch 8 at 784-10-10 on a 23 GB machine (XLA plans ~66 GiB for
the step), so by default it runs at ``--dense-batch 1`` and throughput is compared per
network (both modes scale linearly in the batch); its memory plan at ``--batch`` is still
reported from a compile-only pass (``--no-dense-plan`` skips it).

The loss is a plain MSE against a random target in graph layout (the cost of the flow-matching
loss itself is negligible next to the model).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from weightflow_jax import graphs, mlp
from weightflow_jax.models import VectorField


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="784-10-10", help="MLP architecture, e.g. 784-10-10")
    p.add_argument("--batch", type=int, default=8, help="networks per training step")
    p.add_argument("--width", type=int, default=32, help="RT width (thesis MNIST: 32)")
    p.add_argument("--layers", type=int, default=5, help="RT layers (thesis: 5)")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after 1 warm-up step)")
    p.add_argument("--dense-batch", type=int, default=1,
                   help="batch of the dense mode (0: same as --batch)")
    p.add_argument("--dense-steps", type=int, default=1, help="timed steps of the dense mode")
    p.add_argument("--no-dense-plan", action="store_true",
                   help="skip the compile-only memory plan of dense at --batch")
    p.add_argument("--plan-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--modes", default="sparse,dense", help="comma list of sparse,dense")
    p.add_argument("--remat", action="store_true", help="rematerialize layers (less memory)")
    p.add_argument("--pad", action="store_true",
                   help="pad to padding_budget (adds a padding graph; in dense mode it costs "
                        "one more M x M slot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-isolate", action="store_true",
                   help="run all modes in this process (RSS peaks then accumulate)")
    p.add_argument("--json", action="store_true", help="print one JSON line per mode")
    return p.parse_args(argv)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Compiles and times the training step of one attention mode; returns the figures.

    With ``args.plan_only`` only compiles (no allocation of the step's buffers) and returns
    XLA's memory plan.
    """
    sizes = mlp.parse_arch(args.arch)
    n = args.batch
    steps = args.steps
    if mode == "dense" and not args.plan_only:
        n = args.dense_batch or args.batch
        steps = args.dense_steps
    struct = graphs.structure(sizes)
    model = VectorField(d_in=sizes[0], d_out=sizes[-1], max_hidden_layers=max(1, len(sizes) - 2),
                        num_layers=args.layers, width=args.width, num_heads=args.heads,
                        attention=mode, max_nodes_per_graph=struct.n_node, remat=args.remat)
    key = jax.random.PRNGKey(args.seed)
    k_net, k_tgt, k_init, k_t = jax.random.split(key, 4)
    nets = jax.vmap(lambda k: mlp.init(k, sizes))(jax.random.split(k_net, n))
    target = jax.vmap(lambda k: mlp.init(k, sizes, b_std=0.1))(jax.random.split(k_tgt, n))
    t = jax.random.uniform(k_t, (n,))
    budget = graphs.padding_budget([sizes], n) if args.pad else None

    def to_graph(nets):
        g = graphs.mlp_to_graph(nets)
        return graphs.pad(g, *budget) if budget is not None else g

    graph0 = to_graph(nets)
    if args.plan_only:
        variables = jax.eval_shape(model.init, k_init, graph0, t)
    else:
        variables = jax.jit(model.init)(k_init, graph0, t)
    opt = optax.adam(1e-3)
    opt_state = jax.eval_shape(opt.init, variables) if args.plan_only else opt.init(variables)
    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(variables))

    def loss_fn(variables, nets, target, t):
        out = model.apply(variables, to_graph(nets), t)
        pred = graphs.graph_to_mlp(out, sizes, n=n)
        return sum(jnp.mean((pw - tw) ** 2) + jnp.mean((pb - tb) ** 2)
                   for (pw, pb), (tw, tb) in zip(pred, target))

    @jax.jit
    def step(variables, opt_state, nets, target, t):
        loss, grads = jax.value_and_grad(loss_fn)(variables, nets, target, t)
        updates, opt_state = opt.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state, loss

    t0 = time.perf_counter()
    compiled = step.lower(variables, opt_state, nets, target, t).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                        + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    if args.plan_only:
        return {"mode": mode, "batch": n, "plan_only": True, "compile_s": compile_s,
                "xla_peak_mib": None if xla_bytes is None else xla_bytes / 2**20}
    variables, opt_state, loss = compiled(variables, opt_state, nets, target, t)  # warm-up
    jax.block_until_ready(loss)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        variables, opt_state, loss = compiled(variables, opt_state, nets, target, t)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "mode": mode, "arch": args.arch, "batch": n, "width": args.width,
        "layers": args.layers, "heads": args.heads, "params": n_params,
        "compile_s": compile_s, "step_s": step_s, "nets_per_s": n / step_s,
        "xla_peak_mib": None if xla_bytes is None else xla_bytes / 2**20,
        "rss_peak_mib": rss_kib / 1024, "loss": float(loss),
        "loss_finite": bool(np.isfinite(float(loss))),
    }


def _child(mode: str, argv: list[str], plan_only: bool = False) -> dict:
    cmd = [sys.executable, "-m", "experiments.bench_rt", "--no-isolate", "--json",
           "--modes", mode] + argv + (["--plan-only"] if plan_only else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        return {"mode": mode, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _strip_modes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--modes":
            skip = True
            continue
        if a.startswith("--modes="):
            continue
        out.append(a)
    return out


def main(argv=None) -> None:
    """Runs the benchmark and prints a table and the sparse/dense ratios."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.no_isolate or len(modes) == 1:
        results = [run_mode(m, args) for m in modes]
    else:
        results = [_child(m, _strip_modes(argv)) for m in modes]
    plan = None
    dense_batch = args.dense_batch or args.batch
    if ("dense" in modes and dense_batch != args.batch and not args.no_dense_plan
            and not args.plan_only and not args.json):
        plan = _child("dense", _strip_modes(argv), plan_only=True)
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    print(f"backend={jax.default_backend()} devices={jax.devices()} cpus={os.cpu_count()}")
    print(f"arch={args.arch} batch={args.batch} width={args.width} layers={args.layers} "
          f"heads={args.heads} steps={args.steps} remat={args.remat} pad={args.pad}")
    for r in results:
        if r.get("plan_only"):
            print(f"{r['mode']:>6} (compile only, batch {r['batch']}): xla peak "
                  f"{r['xla_peak_mib']:.0f} MiB")
            continue
        if "error" in r:
            print(f"{r['mode']:>6}: FAILED {r['error']}")
            continue
        xla = "n/a" if r["xla_peak_mib"] is None else f"{r['xla_peak_mib']:.0f}"
        print(f"{r['mode']:>6} (batch {r['batch']}): {r['nets_per_s']:8.3f} nets/s  "
              f"step {r['step_s'] * 1e3:9.1f} ms  compile {r['compile_s']:.1f} s  "
              f"xla peak {xla} MiB  rss peak "
              f"{r['rss_peak_mib']:.0f} MiB  params {r['params']}  loss {r['loss']:.4f}")
    if plan is not None:
        if "error" in plan:
            print(f" dense (compile only, batch {args.batch}): FAILED {plan['error']}")
        else:
            print(f" dense (compile only, batch {plan['batch']}): xla peak "
                  f"{plan['xla_peak_mib']:.0f} MiB (not run)")
    by = {r["mode"]: r for r in results if "error" not in r and not r.get("plan_only")}
    if "sparse" in by and "dense" in by:
        s, d = by["sparse"], by["dense"]
        print(f"sparse/dense throughput ratio (networks per second): "
              f"{s['nets_per_s'] / d['nets_per_s']:.1f}x")
        d_mem, label = d["xla_peak_mib"], f"sparse batch {s['batch']}, dense batch {d['batch']}"
        if plan is not None and "error" not in plan and plan["batch"] == s["batch"]:
            d_mem, label = plan["xla_peak_mib"], f"both batch {s['batch']}"
        if s["xla_peak_mib"] and d_mem:
            print(f"dense/sparse xla peak memory ratio ({label}): "
                  f"{d_mem / s['xla_peak_mib']:.1f}x")


if __name__ == "__main__":
    main()
