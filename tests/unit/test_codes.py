"""Error and finding codes: one catalogue, and a typo cannot invent a code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scalix_migrate.codes import PREFLIGHT_CODES
from scalix_migrate.errors import CATALOGUE, ERROR_CODES, MigrationError, UserError
from scalix_migrate.preflight import Finding, Severity, finding

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["scalix_migrate", "tasks", "flows"]
# A code as the tool writes one: SXM-IMAP-002, PF-USR-006 (any prefix of that shape).
CODE = re.compile(r"\b[A-Z]{2,4}-[A-Z]{2,5}-\d{3}\b")


def _code_literals() -> dict[str, list[str]]:
    """Each code-shaped text in the package source -> where it stands (file:line)."""
    found: dict[str, list[str]] = {}
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for code in CODE.findall(line):
                    found.setdefault(code, []).append(f"{path.relative_to(REPO)}:{n}")
    return found


def test_every_code_in_the_source_is_in_the_one_catalogue() -> None:
    # docs/codes.md is generated from the catalogue (tests/unit/test_docs.py keeps it current).
    literals = _code_literals()
    assert set(CATALOGUE) <= set(literals)  # the walk sees the source: both tables at least
    unknown = {c: where for c, where in literals.items() if c not in CATALOGUE}
    assert unknown == {}, "add these to errors.py or codes.py, or fix the typo"


def test_the_catalogue_holds_errors_and_findings_once_each() -> None:
    assert set(CATALOGUE) == set(ERROR_CODES) | set(PREFLIGHT_CODES)
    assert not set(ERROR_CODES) & set(PREFLIGHT_CODES)
    assert all(c.startswith("SXM-") for c in ERROR_CODES)
    assert all(c.startswith("PF-") for c in PREFLIGHT_CODES)
    assert all(code == entry.code for code, entry in CATALOGUE.items())


@pytest.mark.parametrize("code", ["SXM-IMAP-02", "SXM-IMAP-099", "PF-TST-004"])
def test_an_error_with_an_unknown_code_fails_where_it_is_made(code: str) -> None:
    # PF-* codes name findings, not errors.
    with pytest.raises(ValueError, match="unknown error code"):
        UserError("cannot log in", code=code)
    with pytest.raises(ValueError, match="unknown error code"):
        MigrationError("x", code=code)


@pytest.mark.parametrize("code", ["PF-TST-04", "PF-TST-999", "SXM-IMAP-002"])
def test_a_finding_with_an_unknown_code_fails_where_it_is_made(code: str) -> None:
    with pytest.raises(ValueError, match="unknown preflight code"):
        finding(code, "the test mailbox cannot be read")
    with pytest.raises(ValueError, match="unknown preflight code"):
        Finding(code, Severity.blocking, None, "the test mailbox cannot be read", "fix it")


def test_a_known_code_makes_an_error_and_a_finding() -> None:
    assert UserError("refused", code="SXM-IMAP-002").remedy == CATALOGUE["SXM-IMAP-002"].remedy
    f = finding("PF-TST-004", "not readable")
    assert f.severity is Severity.blocking
    assert f.remedy == CATALOGUE["PF-TST-004"].remedy
