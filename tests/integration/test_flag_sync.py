"""The delta phase's flag sync, end to end on the real test bed.

A user's mail is extracted from the Scalix stand-in (Dovecot) and loaded into the destination
Dovecot; then the user keeps working at the source (reads, unreads, flags, answers, files a
keyword, receives new mail). A ``delta`` extract and a load move the new message and the
changed flags, and nothing else; verify is clean afterwards.

Also: a journal written by a version without ``dest_flags`` gains the column when opened
(SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scalix_migrate.extract import extract_user
from scalix_migrate.load import load_user
from scalix_migrate.records import ScalixUser
from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.state import Journal
from scalix_migrate.verify import verify_user
from tests.support.postgres import PostgresServer, session_postgres
from tests.support.users import add_test_user
from tests.testbed.imap import login

CEST = timezone(timedelta(hours=2))
WHEN = datetime(2024, 3, 4, 9, 30, 0, tzinfo=CEST)


def _mail(i: int, tag: str) -> bytes:
    return (
        f"From: kim@example.test\r\nTo: sam@example.test\r\nSubject: delta {i}\r\n"
        f"Message-ID: <delta-{i}.{tag}@example.test>\r\n\r\nbody {i}\r\n"
    ).encode()


def _new_user(testbed: Any, tag: str) -> tuple[ScalixUser, str]:
    return add_test_user(testbed, tag, ["INBOX", "Projekte"], display="Delta")


def _dest_flags(testbed: Any, login_name: str, folder: str) -> dict[bytes, frozenset[str]]:
    return {m.body: m.flags - {"\\Recent"} for m in testbed.dest_messages(login_name, folder)}


@pytest.mark.testbed
def test_delta_moves_new_mail_and_changed_flags(testbed: Any, tmp_path: Path) -> None:
    tag = "d" + uuid.uuid4().hex[:8]
    user, who = _new_user(testbed, tag)
    m = {i: _mail(i, tag) for i in range(1, 6)}
    testbed.seed_messages(
        who,
        [
            SeedMessage("INBOX", m[1], ["\\Seen"], WHEN),
            SeedMessage("INBOX", m[2], [], WHEN),
            SeedMessage("INBOX", m[3], ["\\Seen", "Projekt-A"], WHEN),
            SeedMessage("Projekte", m[4], ["\\Flagged", "\\Seen"], WHEN),
        ],
    )
    login_name = f"{tag}-flags@dest.test"
    _, cfg = testbed.make_config(
        tmp_path,
        destination={"type": "imap", "login_template": "{local_part}-flags@dest.test"},
        options={"staging_dir": str(tmp_path / "staging")},
    )
    with Journal.open(directory=tmp_path / "state") as journal:
        assert extract_user(cfg, journal, user).staged == 4
        first = load_user(cfg, journal, user)
        assert (first.appended, first.flags_updated, first.failed) == (4, 0, 0)
        assert _dest_flags(testbed, login_name, "INBOX")[m[1]] == {"\\Seen"}

        # The user keeps working at the source while the pre-stage is done.
        source_login = f"mboxadmin:{testbed.admin_user}:{who}"
        with login(testbed.imap_port, source_login, testbed.admin_password) as src:
            src.select_folder("INBOX")
            uids = {src.fetch([u], ["BODY.PEEK[]"])[u][b"BODY[]"]: u for u in src.search("ALL")}
            src.set_flags([uids[m[1]]], ["\\Flagged"])  # read -> unread, and flagged
            src.set_flags([uids[m[2]]], ["\\Seen", "\\Answered"])  # read and answered
            src.set_flags([uids[m[3]]], ["\\Seen", "$Forwarded"])  # keyword replaced
            src.select_folder("Projekte")
            src.set_flags(src.search("ALL"), ["\\Seen"])  # unflagged
        testbed.seed_messages(who, [SeedMessage("INBOX", m[5], ["\\Draft"], WHEN)])

        delta = extract_user(cfg, journal, user, phase="delta")
        assert (delta.staged, delta.flags_refreshed) == (1, 4)
        second = load_user(cfg, journal, user)

        assert (second.appended, second.flags_updated, second.item_errors) == (1, 4, ())
        inbox = _dest_flags(testbed, login_name, "INBOX")
        assert inbox == {
            m[1]: {"\\Flagged"},
            m[2]: {"\\Seen", "\\Answered"},
            m[3]: {"\\Seen", "$Forwarded"},
            m[5]: {"\\Draft"},
        }
        assert _dest_flags(testbed, login_name, "Projekte") == {m[4]: {"\\Seen"}}
        assert verify_user(cfg, journal, user).ok

        # Nothing changed since: another delta round stores nothing.
        assert extract_user(cfg, journal, user, phase="delta").flags_refreshed == 0
        third = load_user(cfg, journal, user)
        assert (third.appended, third.flags_updated) == (0, 0)


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> PostgresServer:
    return session_postgres(request)


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"j_{uuid.uuid4().hex[:12]}")


def test_an_older_journal_gains_the_dest_flags_column(journal_url: str) -> None:
    with Journal.open(url=journal_url) as journal:
        with journal.engine.begin() as conn:
            # What a journal written before the flag sync looks like.
            conn.execute(sa.text("ALTER TABLE messages DROP COLUMN dest_flags"))
        columns = {c["name"] for c in sa.inspect(journal.engine).get_columns("messages")}
        assert "dest_flags" not in columns
    for _ in range(2):  # opening it again (and again) is fine
        with Journal.open(url=journal_url) as journal:
            columns = {c["name"] for c in sa.inspect(journal.engine).get_columns("messages")}
            assert "dest_flags" in columns
            assert list(journal.loaded_with_dest_flags("t", "nobody")) == []
