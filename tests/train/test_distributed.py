"""Data parallelism: 4 fake CPU devices vs 1 device, and 2 processes over loopback (gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.train import _toy
from weightflow_jax import train

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-6


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **extra)
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "WEIGHTFLOW_DISTRIBUTED"):
        if name not in extra:
            env.pop(name, None)
    return env


def test_sharded_step_equals_single_device_step(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tests.train._sharded_worker", str(tmp_path)],
                          cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    out = json.loads(line[len("RESULT "):])
    assert out["device_count"] == 4
    assert out["batch_num_shards"] == 4 and out["batch_shard_shapes"] == [[4, 3]]
    assert out["params_replicated"] is True
    assert out["params_max_diff"] <= TOL and out["opt_state_max_diff"] <= TOL
    assert out["loss_max_rel_diff"] <= TOL
    err = out["indivisible_error"]
    assert err is not None and "batch size 6" in err and "number of devices 4" in err
    # A checkpoint written on 4 devices resumes on 1 and ends where a 1-device run ends.
    assert out["resume_start_step"] == 6
    assert out["resume_other_mesh_max_diff"] <= TOL


def _gloo_available() -> bool:
    try:
        from jax._src.lib import _jax
        return hasattr(_jax, "make_gloo_tcp_collectives")
    except Exception:  # noqa: BLE001 - private module layout may change
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _gloo_available(),
                    reason="this jaxlib has no gloo CPU collectives "
                           "(jax_cpu_collectives_implementation='gloo' unavailable)")
def test_two_processes_on_loopback_match_single_process(tmp_path):
    port = _free_port()
    workdir = tmp_path / "run"
    procs = []
    for pid in range(2):
        env = _env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.train._multiprocess_worker", str(workdir),
             str(tmp_path / f"out{pid}.npz")], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for pid, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {pid} failed:\n{log[-4000:]}"
    outs = [np.load(tmp_path / f"out{pid}.npz") for pid in range(2)]
    for out in outs:
        assert int(out["global_devices"]) == 4 and int(out["mesh_size"]) == 4
        assert int(out["last_checkpoint"]) == 6
    np.testing.assert_array_equal(outs[0]["w"], outs[1]["w"])
    np.testing.assert_array_equal(outs[0]["b"], outs[1]["b"])

    # Single-process, single-device reference.
    mesh1 = train.make_mesh(jax.devices()[:1])
    opt = _toy.optimizer()
    step = train.make_train_step(_toy.loss_fn, opt, mesh1)
    state = train.replicate(train.create_train_state(_toy.init_params(), opt,
                                                     jax.random.key(0)), mesh1)
    for i in range(6):
        state, _ = step(state, train.shard_batch(_toy.batch_fn(i), mesh1))
    np.testing.assert_allclose(outs[0]["w"], state.params["w"], rtol=0, atol=TOL)
    np.testing.assert_allclose(outs[0]["b"], state.params["b"], rtol=0, atol=TOL)
    # Process 0 alone wrote the logs; orbax wrote the checkpoints once.
    assert [r["step"] for r in train.read_metrics(workdir)] == [3, 6]
    with train.CheckpointStore(workdir) as store:
        assert store.all_steps() == [3, 6]


def test_maybe_initialize_distributed_is_a_no_op_without_request(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                 "WEIGHTFLOW_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    assert train.maybe_initialize_distributed() is False
    assert train.maybe_initialize_distributed(enable=False) is False
    with pytest.raises(ValueError, match="process_id"):
        train.maybe_initialize_distributed(coordinator_address="127.0.0.1:1", num_processes=2)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        train.maybe_initialize_distributed(coordinator_address="127.0.0.1:1", num_processes=2,
                                           process_id=2)
    monkeypatch.setenv("JAX_PROCESS_ID", "zero")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='zero' is not an integer"):
        train.maybe_initialize_distributed()
