"""Benchmark: sampling throughput of a flow, batched vs one network at a time.

Measures networks per second for drawing MLPs from a flow with ``--steps`` Euler steps
(prior draw -> integration on the flow's geometry -> decoding to plain weights, all in one
``jax.jit``), and peak memory, for:

* ``batched``: :func:`weightflow_jax.sampling.integrate` (diffrax, :class:`ManifoldEuler`)
  on ``--batch`` networks per call — what :func:`weightflow_jax.sampling.sample` runs;
* ``scan``: :func:`weightflow_jax.flows.euler_sample` (``lax.scan``) on the same batch
  (optional, ``--modes batched,scan,single``);
* ``single`` (the baseline): the same diffrax sampler compiled for batch 1 and called once
  per network from a Python loop, ``--baseline-nets`` networks.

It prints networks per second of each and the ratio batched/single. The model is the
thesis's relational transformer (width 32, 5 layers, 4 heads, sparse attention) over
784-10-10 networks, randomly initialised: sampling cost does not depend on what the model
learned. The default runs 16 Euler steps to stay short on a CPU; every step costs the same
(one model evaluation plus an exp map), so the time of the thesis's 512 steps is 32x the
16-step time — the extrapolated per-network figure is printed too.

Peak memory is reported two ways (as in :mod:`experiments.bench_rt`):

* ``xla``: ``jitted.lower(...).compile().memory_analysis()`` — arguments + outputs +
  temporaries - aliased bytes of the compiled sampler;
* ``rss``: the process's peak resident set size; each mode runs in its own subprocess
  (unless ``--no-isolate``) so that the peaks do not mix.

Default (about two minutes on a 2-core CPU)::

    .venv/bin/python -m experiments.bench_sample --arch 784-10-10 --flow geometric \\
        --width 32 --layers 5 --heads 4 --steps 16 --batch 32 --baseline-nets 4
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
import numpy as np

from weightflow_jax import flows, mlp, models, sampling
from weightflow_jax.flows import field

MODES = ("batched", "scan", "single")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="784-10-10", help="MLP architecture, e.g. 784-10-10")
    p.add_argument("--flow", default="geometric", choices=flows.FLOWS, help="flow kind")
    p.add_argument("--width", type=int, default=32, help="RT width (thesis MNIST: 32)")
    p.add_argument("--layers", type=int, default=5, help="RT layers (thesis: 5)")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--attention", default="sparse", choices=("sparse", "dense"))
    p.add_argument("--steps", type=int, default=16,
                   help="Euler steps (thesis: 512; the cost is linear in the steps)")
    p.add_argument("--batch", type=int, default=32, help="networks per batched call")
    p.add_argument("--baseline-nets", type=int, default=4,
                   help="networks timed one at a time in the baseline")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed calls of the batched modes (median; compiled ahead)")
    p.add_argument("--modes", default="batched,single",
                   help=f"comma list of {','.join(MODES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-isolate", action="store_true",
                   help="run all modes in this process (RSS peaks then accumulate)")
    p.add_argument("--json", action="store_true", help="print one JSON line per mode")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "baseline_nets", "repeats", "width", "layers", "heads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    bad = [m for m in _modes(args) if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad} in --modes; choose from {MODES}")
    return args


def _modes(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.modes.split(",") if m.strip()]


def make_sampler(space: flows.FlowSpace, predict_fn, n: int, steps: int, mode: str):
    """A jitted ``key -> params`` drawing ``n`` networks with ``steps`` Euler steps.

    ``mode``: ``"batched"``/``"single"`` use :func:`sampling.integrate` (diffrax),
    ``"scan"`` uses :func:`flows.euler_sample` (``lax.scan``). Returns plain MLP weights,
    a list of ``(W (n, out, in), b (n, out))``.
    """
    def draw(key):
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(jax.random.split(key, n))
        if mode == "scan":
            x1 = flows.euler_sample(space, predict_fn, x0, steps)
        else:
            x1 = sampling.integrate(space, predict_fn, x0, steps=steps)
        return space.decode(x1)
    return jax.jit(draw)


def _xla_mib(compiled) -> float | None:
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes) / 2**20


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Compiles and times one sampling mode; returns its figures (networks per second...)."""
    sizes = mlp.parse_arch(args.arch)
    space = flows.FlowSpace(args.flow, sizes)
    cfg = models.default_model_config("rt")  # the thesis's RT, unstandardized
    cfg.rt.update(dict(num_layers=args.layers, width=args.width, num_heads=args.heads,
                       attention=args.attention))
    fld = field.make_field(cfg, space, "target", models.Standardizer.identity(space.sizes))
    key = jax.random.key(args.seed)
    variables = fld.init(key)
    n_params = sum(int(x.size) for x in jax.tree.leaves(variables))

    def predict(x, t):
        return fld.apply(variables, x, t)

    n = 1 if mode == "single" else args.batch
    draw = make_sampler(space, predict, n, args.steps, mode)
    t0 = time.perf_counter()
    compiled = draw.lower(key).compile()
    compile_s = time.perf_counter() - t0
    xla = _xla_mib(compiled)
    times, finite = [], True
    calls = args.baseline_nets if mode == "single" else args.repeats
    for i in range(calls):
        t0 = time.perf_counter()
        out = compiled(jax.random.fold_in(key, i))
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        finite &= all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(out))
    if mode == "single":
        nets, seconds = calls, float(np.sum(times))
    else:
        nets, seconds = n, float(np.median(times))
    per_net = seconds / nets
    return {
        "mode": mode, "arch": args.arch, "flow": args.flow, "steps": args.steps,
        "batch": n, "nets_timed": nets * (1 if mode == "single" else calls),
        "width": args.width, "layers": args.layers, "heads": args.heads,
        "attention": args.attention, "params": n_params, "compile_s": compile_s,
        "nets_per_s": nets / seconds, "s_per_net": per_net,
        "s_per_net_512_steps": per_net * 512 / args.steps, "xla_peak_mib": xla,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "finite": bool(finite),
    }


def _strip_modes(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--modes":
            skip = True
        elif not a.startswith("--modes="):
            out.append(a)
    return out


def _child(mode: str, argv: list[str]) -> dict:
    cmd = [sys.executable, "-m", "experiments.bench_sample", "--no-isolate", "--json",
           "--modes", mode] + _strip_modes(argv)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode != 0:
        return {"mode": mode, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    """Runs the benchmark and prints a table and the batched/single ratio."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    modes = _modes(args)
    if args.no_isolate or len(modes) == 1:
        results = [run_mode(m, args) for m in modes]
    else:
        results = [_child(m, argv) for m in modes]
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    print(f"backend={jax.default_backend()} devices={jax.device_count()} cpus={os.cpu_count()}")
    print(f"arch={args.arch} flow={args.flow} steps={args.steps} batch={args.batch} "
          f"width={args.width} layers={args.layers} heads={args.heads} "
          f"attention={args.attention}")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:>7}: FAILED {r['error']}")
            continue
        xla = "n/a" if r["xla_peak_mib"] is None else f"{r['xla_peak_mib']:.0f}"
        print(f"{r['mode']:>7} (batch {r['batch']:>3}, {r['nets_timed']} nets): "
              f"{r['nets_per_s']:8.3f} nets/s  {r['s_per_net']:.3f} s/net "
              f"(512 steps: {r['s_per_net_512_steps']:.1f} s/net)  compile "
              f"{r['compile_s']:.1f} s  xla peak {xla} MiB  rss peak "
              f"{r['rss_peak_mib']:.0f} MiB  finite {r['finite']}")
    by = {r["mode"]: r for r in results if "error" not in r}
    base = by.get("single")
    for m in ("batched", "scan"):
        if m in by and base is not None:
            print(f"{m}/single throughput ratio (networks per second): "
                  f"{by[m]['nets_per_s'] / base['nets_per_s']:.1f}x")
    if "batched" in by and "scan" in by:
        print(f"diffrax/scan throughput ratio (same batch): "
              f"{by['batched']['nets_per_s'] / by['scan']['nets_per_s']:.2f}x")


if __name__ == "__main__":
    main()
