"""The documentation that is generated from code stays in step with it."""

from __future__ import annotations

from pathlib import Path

from scalix_migrate.cli import codes_markdown
from scalix_migrate.errors import CATALOGUE
from scalix_migrate.preflight import PREFLIGHT_CODES

REPO = Path(__file__).resolve().parents[2]


def test_codes_doc_lists_every_code_with_its_remedy() -> None:
    text = (REPO / "docs" / "codes.md").read_text(encoding="utf-8")
    assert text == codes_markdown(), "run: scalix-migrate codes --markdown > docs/codes.md"
    for code in [*CATALOGUE, *PREFLIGHT_CODES]:
        assert f"| {code} |" in text


def test_every_code_has_a_remedy() -> None:
    assert all(c.remedy.strip() for c in CATALOGUE.values())
    assert all(c.remedy.strip() for c in PREFLIGHT_CODES.values())
