"""Benchmark: data-parallel scaling of the flow train step over N devices vs 1.

Runs the flow's real train step (:func:`weightflow_jax.train.recipe.make_loss_fn` — time draw,
geodesic interpolation, relational transformer, CFM loss — inside
:func:`weightflow_jax.train.make_train_step`: one ``jax.jit`` over a 1-D data mesh,
parameters replicated, the batch sharded along its leading axis) with the same global batch
on 1 device and on N devices, and prints steps per second, the ratio to 1 device, and peak
memory. Every device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX fixes its device list at start-up),
so the RSS peaks do not mix.

On a CPU the N devices are *fake*: they share the same cores, so no speed-up is expected; the
run shows that the sharded step compiles and runs, gives the same loss as one device, and what
the partitioning costs. On GPUs/TPUs pass ``--real`` to use the real devices instead (then
``--devices`` may list at most ``jax.device_count()``); the counts other than the full one
use the first N devices.

Peak memory: ``xla`` is the compiled step's plan (``memory_analysis()``: arguments + outputs +
temporaries - aliases; per device), ``rss`` the process's peak resident set size.

Default (about two minutes on a 2-core CPU)::

    .venv/bin/python -m experiments.bench_parallel --task mnist --size cpu \\
        --devices 1,2,4 --batch 8 --steps 5

The figures of one device count are also available alone with ``--child --num-devices N``
(one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="mnist", choices=("mnist", "breast_cancer"),
                   help="which experiment config (mnist: 784-10-10, breast_cancer: 30-16-16-2)")
    p.add_argument("--flow", default="geometric", choices=("euclidean", "normalized",
                                                           "geometric"))
    p.add_argument("--size", default="cpu", choices=("default", "cpu", "test"),
                   help="config size giving the model (default = thesis: 5 layers, width 32)")
    p.add_argument("--width", type=int, default=0, help="RT width (0: the config's)")
    p.add_argument("--layers", type=int, default=0, help="RT layers (0: the config's)")
    p.add_argument("--heads", type=int, default=0, help="attention heads (0: the config's)")
    p.add_argument("--batch", type=int, default=8,
                   help="global batch (networks per step), the same for every device count")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 1 warm-up step)")
    p.add_argument("--devices", default="1,2,4", help="comma list of device counts")
    p.add_argument("--real", action="store_true",
                   help="use the real devices (GPU/TPU) instead of fake CPU devices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help="measure one device count in this "
                   "process and print one JSON line (needs --num-devices)")
    p.add_argument("--num-devices", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON line per device count")
    args = p.parse_args(argv)
    try:
        args.device_counts = [int(d) for d in args.devices.split(",") if d.strip()]
    except ValueError:
        p.error(f"--devices must be a comma list of integers, got {args.devices!r}")
    if not args.device_counts or min(args.device_counts) < 1:
        p.error(f"--devices needs positive device counts, got {args.devices!r}")
    for n in args.device_counts:
        if args.batch % n:
            p.error(f"--batch {args.batch} is not divisible by {n} devices; pick a batch that "
                    f"is a multiple of every count in --devices")
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be >= 1")
    if args.child and args.num_devices < 1:
        p.error("--child needs --num-devices N")
    return args


def run_child(args: argparse.Namespace) -> dict:
    """Builds the flow's train step on ``args.num_devices`` devices and times it."""
    import jax

    from configs.common import get_base_config
    from weightflow_jax import flows, train as train_lib
    from weightflow_jax.train import recipe

    n_dev = args.num_devices
    devices = jax.devices()
    if len(devices) < n_dev:
        raise ValueError(f"asked for {n_dev} devices but JAX sees {len(devices)} "
                         f"({jax.default_backend()}); without --real the parent sets "
                         "XLA_FLAGS=--xla_force_host_platform_device_count=N")
    config = get_base_config(args.task, args.flow, args.size)
    with config.unlocked():
        config.train.batch_size = args.batch
        config.model.name = "rt"  # the benchmark measures the relational transformer
        for field, value in (("width", args.width), ("num_layers", args.layers),
                             ("num_heads", args.heads)):
            if value:
                config.model.rt[field] = value
    key = jax.random.key(args.seed)
    k_init, k_state, k_x0, k_x1 = jax.random.split(key, 4)
    space = recipe.flow_space(config)
    run = recipe.build_flow(config, space, k_init)
    optimizer = recipe.make_optimizer(config)
    mesh = train_lib.make_mesh(devices[:n_dev])
    step = train_lib.make_train_step(recipe.make_loss_fn(run), optimizer, mesh)
    state = train_lib.create_train_state(run.variables["params"], optimizer, k_state)
    state = train_lib.replicate(state, mesh)

    # A fixed batch: prior draws paired with random points of the data manifold.
    def draws(k, std):
        return jax.vmap(lambda kk: flows.sample_prior(kk, space, std))(
            jax.random.split(k, args.batch))
    x0 = jax.device_get(draws(k_x0, float(config.flow.prior_std)))
    x1 = jax.device_get(jax.vmap(space.retract)(draws(k_x1, 1.0)))
    batch = train_lib.shard_batch({"x0": x0, "x1": x1}, mesh)

    t0 = time.perf_counter()
    compiled = step.fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    xla = None if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                    + mem.temp_size_in_bytes - mem.alias_size_in_bytes) / 2**20
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    first_s = time.perf_counter() - t0
    losses = [float(metrics["loss"])]
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
        losses.append(float(metrics["loss"]))
    step_s = float(np.median(times))
    return {
        "devices": n_dev, "backend": jax.default_backend(), "arch": str(config.zoo.arch),
        "flow": str(config.flow.kind), "batch": args.batch,
        "per_device_batch": args.batch // n_dev, "width": int(config.model.rt.width),
        "layers": int(config.model.rt.num_layers), "heads": int(config.model.rt.num_heads),
        "compile_s": compile_s, "first_call_s": first_s, "step_s": step_s, "steps_per_s": 1.0 / step_s,
        "nets_per_s": args.batch / step_s, "xla_peak_mib_per_device": xla,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": losses, "finite": bool(np.all(np.isfinite(losses))),
    }


def _child_argv(argv: list[str], n: int) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--devices", "--num-devices"):
            skip = True
        elif not (a.startswith("--devices=") or a.startswith("--num-devices=")
                  or a in ("--json", "--child")):
            out.append(a)
    return out + ["--child", "--num-devices", str(n)]


def _env_for(n: int, real: bool) -> dict:
    env = dict(os.environ)
    if not real:
        flags = [f for f in env.get("XLA_FLAGS", "").split()
                 if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        env["JAX_PLATFORMS"] = "cpu"
    return env


def run_parent(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Runs every device count in its own subprocess; returns their figures."""
    results = []
    for n in args.device_counts:
        cmd = [sys.executable, "-m", "experiments.bench_parallel"] + _child_argv(argv, n)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env_for(n, args.real))
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            results.append({"devices": n, "error": lines[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def main(argv=None) -> None:
    """Runs the benchmark and prints steps/s per device count and the ratios to 1 device."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return
    results = run_parent(args, argv)
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    ok = [r for r in results if "error" not in r]
    head = ok[0] if ok else {}
    kind = "real" if args.real else "fake CPU (same cores)"
    print(f"flow train step, {kind} devices, cpus={os.cpu_count()}: task={args.task} "
          f"arch={head.get('arch')} flow={args.flow} width={head.get('width')} "
          f"layers={head.get('layers')} heads={head.get('heads')} global batch={args.batch} "
          f"timed steps={args.steps}")
    base = next((r for r in ok if r["devices"] == 1), None)
    for r in results:
        if "error" in r:
            print(f"{r['devices']:>3} device(s): FAILED {r['error']}")
            continue
        xla = ("n/a" if r["xla_peak_mib_per_device"] is None
               else f"{r['xla_peak_mib_per_device']:.0f}")
        ratio = f"  x{r['steps_per_s'] / base['steps_per_s']:.2f} vs 1" if base else ""
        dloss = ""
        if base is not None:
            diff = max(abs(a - b) for a, b in zip(r["losses"], base["losses"]))
            dloss = f"  max |loss - loss(1 device)| {diff:.1e}"
        print(f"{r['devices']:>3} device(s) (batch {r['per_device_batch']}/device): "
              f"{r['steps_per_s']:7.3f} steps/s  step {r['step_s'] * 1e3:8.1f} ms  compile "
              f"{r['compile_s']:.1f} s  xla peak {xla} MiB/device  rss peak "
              f"{r['rss_peak_mib']:.0f} MiB{ratio}{dloss}")
    if base is not None:
        for r in ok:
            if r["devices"] != 1:
                print(f"{r['devices']} devices / 1 device throughput ratio (steps per second, "
                      f"same global batch): {r['steps_per_s'] / base['steps_per_s']:.2f}x")


if __name__ == "__main__":
    main()
