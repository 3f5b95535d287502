"""Test-suite settings shared by every test module."""

import os

import jax
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is reproducible; run with
# `--hypothesis-profile=explore` to search new examples.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=200)
settings.load_profile("default")

# Compilation dominates the suite's time (e.g. 400 of the 505 s of the transfer/fine-tuning
# table test were XLA compiles), and many tests compile the same programs through fresh
# closures (a sampler or decoder per call), which jit's in-memory cache cannot reuse. A
# persistent compilation cache keyed on the compiled program shares them across the tests
# of a process. One directory per xdist worker: without a size limit (which needs the
# `filelock` package) jax writes entries without a lock, so two processes must not share
# one. Set WEIGHTFLOW_TEST_JAX_CACHE to another directory, or to "" to turn it off.
_CACHE = os.environ.get("WEIGHTFLOW_TEST_JAX_CACHE", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, ".pytest_cache",
    "jax_compilation_cache"))
if _CACHE:
    jax.config.update("jax_compilation_cache_dir", os.path.normpath(os.path.join(
        _CACHE, os.environ.get("PYTEST_XDIST_WORKER", "main"))))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
