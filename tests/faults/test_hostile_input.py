"""Hostile input on the real servers: malformed messages, awkward folder and user names,
admin output that is not UTF-8. Each migrates exactly (per message) or is reported by name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from scalix_migrate.discovery import discover_users
from scalix_migrate.sandbox.directory import FolderSpec, SeedMessage
from scalix_migrate.steps import journal_for
from tests.integration.scalix_bed import TenantSlice, config
from tests.support.fidelity import assert_user_migrated_exactly
from tests.support.migrate import migrate_all

WHEN = datetime(2018, 7, 8, 9, 10, 11, tzinfo=UTC)

MESSAGES = {
    "bad MIME": (
        b"Subject: broken\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        b"--never-closed\r\nContent-Type: text/plain; charset=x-unknown\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!! not base64 !!!\r\n"
    ),
    "8-bit headers": (
        b"Subject: Gr\xfc\xdfe aus K\xf6ln \xff\xfe\r\nFrom: J\xf6rg <j@x>\r\n"
        b"Message-ID: <8bit@x>\r\n\r\nbody \xe4\xf6\xfc\r\n"
    ),
    "NUL in the body": b"Subject: nul\r\nMessage-ID: <nul@x>\r\n\r\nbefore\x00after\r\n",
    "10,000-character line": (
        b"Subject: long\r\nMessage-ID: <long@x>\r\nX-Long: "
        + b"h" * 10_000
        + b"\r\n\r\n"
        + b"b" * 10_000
        + b"\r\n"
    ),
    "no header at all": b"\r\njust a body, no header, no Message-ID\r\n",
    "bare LF line ends": b"Subject: lf\nMessage-ID: <lf@x>\n\nunix\nline ends\n",
}
FOLDERS = [
    "Tom & Jerry",
    'Say "hi"',
    "Trailing space ",
    "Back\\slash? no: percent % and star *",
    "Ünïcødé/Ταχυδρομείο",
    "&-amp-ish &AAA-",
]


def test_malformed_messages_and_awkward_folder_names_migrate_exactly(
    bed: TenantSlice, tmp_path: Path
) -> None:
    u = bed.new_user("hostile", folders=[FolderSpec(f) for f in FOLDERS])
    bed.testbed.seed_messages(
        u.addresses[0],
        [
            SeedMessage(folder=f, body=body, flags=["\\Seen"] if i % 2 else [], internaldate=WHEN)
            for i, f in enumerate(["INBOX", *FOLDERS])
            for body in MESSAGES.values()
        ],
    )
    tag = uuid.uuid4().hex[:6]
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": u.addresses[0]},
        options={"users": {"include": [u.addresses[0]]}},
        destination={
            "type": "imap",
            "host": "127.0.0.1",
            "port": bed.testbed.dest_imap_port,
            "tls": "none",
            "password": bed.testbed.dest_password,
            "login_template": f"{{local_part}}-{tag}@dest.test",
            "preset": "dovecot",
        },
    )
    (user,) = migrate_all(cfg)
    with journal_for(cfg) as journal:
        moved = assert_user_migrated_exactly(cfg, journal, user)
        (row,) = [r for r in journal.user_rows(cfg.tenant) if r.user_key == user.key]
    assert moved == len(MESSAGES) * (len(FOLDERS) + 1)
    assert row.status == "done", row.error_message


def test_a_user_named_with_shell_metacharacters_is_migrated_and_runs_nothing(
    bed: TenantSlice, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    evil = f"o'brien\"; touch {canary}; $(touch {canary}) `touch {canary}` #"
    u = bed.new_user("evil", display_name=evil)
    bed.testbed.seed_messages(
        u.addresses[0], [SeedMessage("INBOX", b"Subject: x\r\n\r\ny\r\n", [], WHEN)]
    )
    cfg = config(
        bed,
        tmp_path,
        source={"test_user": u.addresses[0], "imap": {"login_identity": "display_name"}},
        options={"users": {"include": [evil]}},
        destination={"type": "maildir", "path": str(tmp_path / "out" / "{email}")},
    )
    (user,) = migrate_all(cfg)
    assert user.display_name == evil
    with journal_for(cfg) as journal:
        assert assert_user_migrated_exactly(cfg, journal, user) == 1
    assert not canary.exists()


def test_admin_output_that_is_not_utf8_is_read_and_the_odd_line_reported(
    bed: TenantSlice, tmp_path: Path
) -> None:
    u = bed.new_user("latin1")
    # A site wrapper that prints Latin-1 and a stray 0xFF before the real command's output.
    template = "printf 'Hinweis: Gr\\374\\337e \\377\\n'; {bin}/sxdu -a {name}"
    cfg = config(bed, tmp_path, ssh={"commands": {"sxdu": template}})
    found = discover_users(cfg)
    mine = next(x for x in found.all_users if x.auth_id == u.auth_id)
    assert mine.mailbox_kib == u.mailbox_kib
    odd = [line for line in found.unparsed if line.startswith(f"sxdu {u.display_name}/")]
    assert odd, found.unparsed
    assert all("\ufffd" in line for line in odd)
