"""Multi-process (multi-host) start-up: ``jax.distributed.initialize`` when asked for.

Call :func:`maybe_initialize_distributed` first thing in an entry point, before any other JAX
call (JAX must not have created its backends yet). It does nothing unless one of these says the
run spans several processes:

  * ``enable=True`` (e.g. from a command-line flag);
  * ``WEIGHTFLOW_DISTRIBUTED=1``: let JAX detect the cluster itself (Cloud TPU pod slices,
    SLURM, Open MPI, Kubernetes... -- see ``jax.distributed.initialize``);
  * ``JAX_COORDINATOR_ADDRESS=host:port`` with ``JAX_NUM_PROCESSES=N`` and ``JAX_PROCESS_ID=i``
    (0-based) set on every process: explicit set-up, e.g. several processes on one machine or
    hosts without a cluster manager. ``JAX_LOCAL_DEVICE_IDS`` (comma-separated) is honoured by
    JAX itself.

On CPU, collectives across processes need an implementation; this module selects Gloo
(``jax_cpu_collectives_implementation="gloo"``) before initializing. GPU and TPU use their own.
``WEIGHTFLOW_CPU_COLLECTIVES`` (``gloo`` or ``mpi``) overrides that choice.
"""

from __future__ import annotations

import os

import jax

ENV_ENABLE = "WEIGHTFLOW_DISTRIBUTED"
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_CPU_COLLECTIVES = "WEIGHTFLOW_CPU_COLLECTIVES"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"maybe_initialize_distributed: environment variable {name}={value!r} "
                         f"is not an integer.") from None


def maybe_initialize_distributed(enable: bool | None = None, *,
                                 coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
    """Initializes multi-process JAX if the arguments or environment ask for it.

    Args:
      enable: ``True`` forces initialization, ``False`` forbids it, ``None`` (default) decides
        from the arguments and the environment variables listed in the module docstring.
      coordinator_address: ``"host:port"`` of process 0 (overrides ``JAX_COORDINATOR_ADDRESS``).
      num_processes: total number of processes (overrides ``JAX_NUM_PROCESSES``).
      process_id: this process's index in ``[0, num_processes)`` (overrides
        ``JAX_PROCESS_ID``).

    Returns:
      ``True`` when JAX runs distributed after the call (initialized now or before), ``False``
      for a plain single-process run.

    Raises:
      ValueError: an incomplete explicit set-up (e.g. an address but no process id).
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if enable is None:
        enable = (os.environ.get(ENV_ENABLE, "").lower() in ("1", "true", "yes")
                  or coordinator_address is not None)
    if not enable:
        return False
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if given and len(given) < 3 and os.environ.get(ENV_ENABLE) is None:
        missing = [k for k in explicit if k not in given]
        raise ValueError(
            f"maybe_initialize_distributed: got {given} but not {missing}; give all three "
            f"({ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}) or set "
            f"{ENV_ENABLE}=1 to let JAX detect the cluster.")
    if num_processes is not None and process_id is not None and not (
            0 <= process_id < num_processes):
        raise ValueError(f"maybe_initialize_distributed: process_id {process_id} is outside "
                         f"[0, {num_processes}).")
    jax.config.update("jax_cpu_collectives_implementation",
                      os.environ.get(ENV_CPU_COLLECTIVES, "gloo"))
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
