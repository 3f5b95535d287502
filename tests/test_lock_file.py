"""The package lock file (requirements-lock.txt) and how results files name it."""

from __future__ import annotations

import hashlib
from pathlib import Path
import re
import tomllib

from weightflow_jax import pipeline

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / pipeline.LOCK_FILE
INSTALL = ("python3.12 -m venv .venv && .venv/bin/pip install -r requirements-lock.txt && "
           ".venv/bin/pip install --no-deps -e '.[test]'")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_declared_dependency_exactly():
    lines = [ln for ln in LOCK.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[^\s;]+", ln) for ln in lines), lines
    locked = {_norm(ln.split("==")[0]) for ln in lines}
    assert len(locked) == len(lines)  # one pin per package
    assert "weightflow-jax" not in locked  # the project itself is installed with -e
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {_norm(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in declared}
    assert names <= locked, sorted(names - locked)


def test_lock_header_and_readme_give_the_one_install_command():
    assert INSTALL in LOCK.read_text()
    readme = (ROOT / "README.md").read_text()
    assert INSTALL in readme and "requirements-lock.txt" in readme
    # the README still opens with its two set-up commands, unchanged
    assert readme.splitlines()[2:6] == [
        "```bash",
        "python3.12 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/python -m "
        "experiments.train --config=configs/breast_cancer_geometric.py:cpu",
        "python3.12 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python "
        "-m pytest -q -n 2",
        "```"]


def test_lock_file_info_names_and_hashes_the_file(tmp_path):
    info = pipeline.lock_file_info()
    assert info["name"] == "requirements-lock.txt"
    assert info["sha256"] == hashlib.sha256(LOCK.read_bytes()).hexdigest()
    assert isinstance(info["mismatches"], list)
    assert pipeline._hardware()["lock_file"]["sha256"] == info["sha256"]
    # no lock file (e.g. an installed wheel): None, not an error
    assert pipeline.lock_file_info(tmp_path) is None
    # drift from the installed versions is reported per package
    (tmp_path / pipeline.LOCK_FILE).write_text(
        "# header\nnumpy==0.0.1\nno-such-package-xyz==1.0\n\n")
    drift = pipeline.lock_file_info(tmp_path)["mismatches"]
    assert drift[0] == "no-such-package-xyz: locked 1.0, installed None"
    assert drift[1].startswith("numpy: locked 0.0.1, installed ") and len(drift) == 2


def test_results_markdown_names_the_lock_file():
    from weightflow_jax.tables import render as tables

    info = {"name": "requirements-lock.txt", "sha256": "ab" * 32, "mismatches": []}
    assert tables._lock_line(info) == (f"`requirements-lock.txt` (sha256 `{'ab' * 32}`), "
                                       "installed versions match it")
    assert "1 installed version(s) differ: jax: locked 1, installed 2" in tables._lock_line(
        dict(info, mismatches=["jax: locked 1, installed 2"]))
    assert "no lock file" in tables._lock_line(None)
