"""The hashes pinned in the code equal the ones recorded in third_party/CHECKSUMS.sha256."""

from __future__ import annotations

from pathlib import Path

from weightflow_jax.data import core, sources

CHECKSUMS = Path(__file__).resolve().parents[2] / "third_party" / "CHECKSUMS.sha256"


def _records() -> dict[str, tuple[str, int]]:
    out = {}
    for line in CHECKSUMS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, size, what = line.split(maxsplit=2)
        out[what.split(" (")[0]] = (digest, int(size))
    return out


def test_archive_and_member_pins_match_third_party():
    rec = _records()
    assert len(sources.ARCHIVES) == 3
    for spec in sources.ARCHIVES.values():
        assert rec[spec.filename] == (spec.sha256, spec.size)
        for member, digest in spec.members.items():
            assert rec[f"{spec.filename}!{member}"][0] == digest


def test_content_pins_match_third_party():
    rec = _records()
    n = 0
    for name, kinds in core.CONTENT_PINS.items():
        for kind, arrays in kinds.items():
            for key, digest in arrays.items():
                assert rec[f"{name}/{kind}/{key}"][0] == digest
                n += 1
    assert n == 8


def test_breast_cancer_thesis_index_pins_match_third_party():
    rec = _records()
    for split, digest in core.BREAST_CANCER_THESIS_INDEX_PINS.items():
        assert rec[f"breast_cancer_thesis/indices/{split}"][0] == digest
