"""The repository stands alone: no comment cites a document that is not in it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built from parts so this file does not match itself.
FORBIDDEN = ("SPEC " + "§", "FACTS " + "§", "../" + "shared", "/work/" + "shared")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".sh", ".yml", ".yaml"}


def _files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in ("src", "tests", "benchmarks", "examples", "docs", "scripts"):
        base = ROOT / folder
        if base.is_dir():
            found += [
                p for p in base.rglob("*")
                if p.suffix in SUFFIXES and p.is_file() and ".venv" not in p.parts
            ]
    return [p for p in found if p.exists()]


def test_no_reference_to_documents_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(word in line for word in FORBIDDEN)
    ]
    assert offenders == []


def test_the_contract_is_in_the_repository_with_its_public_sources() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    for source in (
        "botocore/data/mediastore-data/2017-09-01",
        "https://docs.aws.amazon.com/mediastore/latest/apireference/",
        "https://docs.aws.amazon.com/mediastore/latest/ug/",
        "RFC 9110",
    ):
        assert source in contract
    for heading in ("## Errors", "## Signing", "## Ranges", "## Names and limits",
                    "## Live publishing", "## Semantics", "## Operations on the wire"):
        assert heading in contract
