"""extract_user against real IMAP servers.

* The test bed (``testbed`` fixture: Dovecot playing Scalix, mboxadmin LOGIN through its
  checkpassword passdb) covers issue 5's "Done when": flags and keywords, INTERNALDATE to the
  second, nested and non-ASCII folders, empty folders, missing and duplicate Message-IDs, a
  20 MB message, a UIDVALIDITY change, a connection dropped mid-folder, and the source
  unchanged afterwards.
* The embedded sandbox (pymap speaking Scalix's LIST attributes and backslash flags such as
  ``\\X-Forwarded``, which Dovecot cannot store) covers the Scalix-flavoured parts.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest

from scalix_migrate.config import TenantConfig
from scalix_migrate.errors import TransientError
from scalix_migrate.extract import extract_user
from scalix_migrate.records import FetchedMessage, LoadState, ScalixUser, SourceFolder
from scalix_migrate.sandbox import Sandbox
from scalix_migrate.sandbox.directory import SeedMessage
from scalix_migrate.scalix.imap_source import FetchFailure, MessageInfo, ScalixMailbox
from scalix_migrate.staging import StagingStore, sha256_hex
from scalix_migrate.state import Journal
from scalix_migrate.user_context import UserContext, open_source
from tests.support.users import add_test_user

CEST = timezone(timedelta(hours=2))

NESTED = "INBOX/Projekte/Größe"
CYRILLIC = "Архив/2019 отчёты"


def tuned(cfg: TenantConfig, tmp_path: Path, **imap: Any) -> TenantConfig:
    """The test bed's config with our own staging dir and IMAP batch settings."""
    data = cfg.model_dump(mode="json")
    data["options"]["staging_dir"] = str(tmp_path / "staging")
    data["source"]["imap"].update(imap)
    return TenantConfig.model_validate(data)


def new_user(testbed: Any, folders: Sequence[str]) -> tuple[ScalixUser, str]:
    return add_test_user(testbed, "x" + uuid.uuid4().hex[:8], folders, display="Extract")


def _factory(cls: type[ScalixMailbox]) -> Any:
    """A mailbox factory for a wrapping subclass, logging in as the user's context says."""
    return lambda cfg, user: cls(cfg, user, login=UserContext.of(cfg, user).source_login)


def mail(i: int, *, mid: str | None = "auto", size: int = 0) -> bytes:
    head = b"From: a@example.test\r\nSubject: test %d\r\n" % i
    if mid == "auto":
        head += b"Message-ID: <t%d.%s@example.test>\r\n" % (i, uuid.uuid4().hex.encode())
    elif mid is not None:
        head += b"Message-ID: " + mid.encode() + b"\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n"
    return head + b"\r\nbody %d\r\n" % i + line * (size // len(line))


def snapshot(testbed: Any, who: str, folders: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name in folders:
        msgs: list[FetchedMessage] = testbed.source_messages(who, name)
        out[name] = [(m.uid, m.flags, m.internaldate.timestamp(), m.size) for m in msgs]
    return out


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(directory=tmp_path / "state") as j:
        yield j


def base_config(testbed: Any, tmp_path: Path, **imap: Any) -> TenantConfig:
    _, cfg = testbed.make_config(
        tmp_path, destination={"type": "mbox", "path": str(tmp_path / "mbox")}
    )
    return tuned(cfg, tmp_path, **imap)


@pytest.mark.testbed
def test_full_extract_keeps_everything_and_leaves_the_source_alone(
    testbed: Any, tmp_path: Path, journal: Journal
) -> None:
    folders = ["INBOX", "INBOX/Projekte", NESTED, CYRILLIC, "Leer", "Sent Items"]
    user, who = new_user(testbed, folders)
    when = datetime(2019, 3, 4, 5, 6, 7, tzinfo=CEST)
    big = mail(99, size=20 * 1024 * 1024)
    seeds = [
        SeedMessage("INBOX", mail(1), ["\\Seen", "$Forwarded", "Projekt-A", "$Label1"], when),
        SeedMessage("INBOX", mail(2, mid=None), [], when + timedelta(seconds=1)),
        SeedMessage("INBOX", mail(3, mid="<same@example.test>"), ["\\Flagged"], when),
        SeedMessage("INBOX", mail(4, mid="<same@example.test>"), ["\\Answered", "\\Seen"], when),
        SeedMessage("INBOX", big, ["\\Seen"], when),
        SeedMessage(NESTED, mail(5), ["\\Draft"], when),
        SeedMessage(CYRILLIC, mail(6), [], datetime(2001, 12, 31, 23, 59, 59, tzinfo=CEST)),
        SeedMessage("Sent Items", mail(7), ["\\Seen"], when),
    ]
    testbed.seed_messages(who, seeds)
    before = snapshot(testbed, who, folders)
    cfg = base_config(testbed, tmp_path)

    result = extract_user(cfg, journal, user)

    assert before == snapshot(testbed, who, folders), "the source mailbox changed"
    unseen = [e for e in before["INBOX"] if "\\Seen" not in e[1]]
    assert len(unseen) == 2  # still unread after the extract
    assert result.found == result.staged == len(seeds)
    assert result.failed == 0
    assert "Leer" in result.empty_folders
    rows = list(journal.entries(cfg.tenant, user.key))
    assert len(rows) == len(seeds)  # no Message-ID and duplicate IDs: all kept
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    by_folder: dict[str, list[Any]] = {}
    for r in rows:
        by_folder.setdefault(r.folder, []).append(r)
    assert set(by_folder) == {"INBOX", NESTED, CYRILLIC, "Sent Items"}
    recorded = {r.folder for r in journal.folder_rows(cfg.tenant, user.key)}
    assert set(folders) <= recorded  # empty folders too, so load creates them
    for seed in seeds:
        match = [r for r in by_folder[seed.folder] if r.sha256 == sha256_hex(seed.body)]
        assert len(match) >= 1, f"message missing from {seed.folder}"
        row = match[0]
        assert row.flags == frozenset(seed.flags)
        assert row.internaldate.timestamp() == seed.internaldate.timestamp()
        assert row.size == len(seed.body)
        assert row.load_state is LoadState.staged
    big_row = next(r for r in rows if r.size == len(big))
    assert store.get(big_row.sha256) == big
    assert sum(1 for r in rows if r.message_id == "<same@example.test>") == 2
    assert sum(1 for r in rows if r.message_id is None) == 1
    special = {r.folder: r.special for r in journal.folder_rows(cfg.tenant, user.key)}
    assert special["Sent Items"] == "SentItems"
    assert special["INBOX"] == "Inbox"

    again = extract_user(cfg, journal, user, phase="delta")
    assert (again.found, again.staged) == (0, 0)
    assert len(list(journal.entries(cfg.tenant, user.key))) == len(seeds)
    assert before == snapshot(testbed, who, folders), "the delta run changed the source"


@pytest.mark.testbed
def test_uidvalidity_change_between_runs_replans_without_duplicates(
    testbed: Any, tmp_path: Path, journal: Journal
) -> None:
    user, who = new_user(testbed, ["INBOX", "Ablage"])
    when = datetime(2022, 6, 1, 8, 0, 0, tzinfo=CEST)
    seeds = [SeedMessage("Ablage", mail(i), ["\\Seen"], when) for i in range(4)]
    testbed.seed_messages(who, seeds)
    cfg = base_config(testbed, tmp_path)
    extract_user(cfg, journal, user)
    first = list(journal.entries(cfg.tenant, user.key, folder="Ablage"))
    journal.set_load_state(
        [e.id for e in first if e.id is not None], LoadState.loaded, dest_folder="Ablage"
    )
    old_validity = first[0].uidvalidity

    # Rebuild the folder on the source: Dovecot hands out a new UIDVALIDITY.
    with open_source(cfg, user) as mbox:
        mbox.client.delete_folder("Ablage")
        mbox.client.create_folder("Ablage")
    testbed.seed_messages(who, [*seeds, SeedMessage("Ablage", mail(9), [], when)])

    result = extract_user(cfg, journal, user, phase="delta")

    assert result.replanned_folders == ("Ablage",)
    rows = list(journal.entries(cfg.tenant, user.key, folder="Ablage"))
    new = [r for r in rows if r.uidvalidity != old_validity]
    assert len(new) == 5
    states = sorted(r.load_state.value for r in new)
    assert states == ["loaded"] * 4 + ["staged"]  # only the new message is left to load
    assert sum(1 for r in rows if r.load_state is LoadState.superseded) == 4


class DroppingMailbox(ScalixMailbox):
    """Kills its own socket after the second fetch batch, like a connection reset."""

    def fetch(
        self, folder: SourceFolder, infos: Sequence[MessageInfo]
    ) -> Iterator[list[FetchedMessage | FetchFailure]]:
        for batch in super().fetch(folder, infos):
            yield batch
            DroppingMailbox.served += 1
            if DroppingMailbox.served == 2:
                self.client.socket().shutdown(socket.SHUT_RDWR)

    served = 0


@pytest.mark.testbed
def test_connection_dropped_mid_folder_resumes_from_cursor(
    testbed: Any, tmp_path: Path, journal: Journal
) -> None:
    user, who = new_user(testbed, ["INBOX"])
    when = datetime(2023, 1, 2, 3, 4, 5, tzinfo=CEST)
    testbed.seed_messages(who, [SeedMessage("INBOX", mail(i), [], when) for i in range(12)])
    cfg = base_config(testbed, tmp_path, fetch_batch_messages=5)
    DroppingMailbox.served = 0

    with pytest.raises(TransientError) as info:
        extract_user(cfg, journal, user, mailbox=_factory(DroppingMailbox))
    assert info.value.code == "SXM-IMAP-007"  # a working connection lost, not unreachable
    assert len(list(journal.entries(cfg.tenant, user.key))) == 10

    result = extract_user(cfg, journal, user)
    assert result.found == 2
    uids = [e.uid for e in journal.entries(cfg.tenant, user.key)]
    assert sorted(uids) == list(range(1, 13))
    assert len(set(e.sha256 for e in journal.entries(cfg.tenant, user.key))) == 12


class RefusingMailbox(ScalixMailbox):
    """Reports the UIDs in ``refused`` as not returned, as Scalix does for an unreadable item."""

    refused: frozenset[int] = frozenset()

    def fetch(
        self, folder: SourceFolder, infos: Sequence[MessageInfo]
    ) -> Iterator[list[FetchedMessage | FetchFailure]]:
        for batch in super().fetch(folder, infos):
            yield [
                FetchFailure(m.uid, m.size, "server said: NO [SERVERBUG]")
                if m.uid in self.refused
                else m
                for m in batch
            ]


@pytest.mark.testbed
def test_a_message_that_failed_to_fetch_is_fetched_again_on_the_next_run(
    testbed: Any, tmp_path: Path, journal: Journal
) -> None:
    user, who = new_user(testbed, ["INBOX"])
    when = datetime(2023, 4, 5, 6, 7, 8, tzinfo=CEST)
    bodies = [mail(i) for i in range(5)]
    testbed.seed_messages(who, [SeedMessage("INBOX", b, ["\\Seen"], when) for b in bodies])
    before = snapshot(testbed, who, ["INBOX"])
    cfg = base_config(testbed, tmp_path, fetch_batch_messages=2)
    RefusingMailbox.refused = frozenset({3})

    first = extract_user(cfg, journal, user, mailbox=_factory(RefusingMailbox))
    assert (first.found, first.staged, first.failed) == (5, 4, 1)
    assert [(e.uid, e.error_code) for e in journal.item_errors(cfg.tenant)] == [(3, "SXM-IMAP-004")]

    second = extract_user(cfg, journal, user, phase="delta")

    assert (second.found, second.retried, second.recovered, second.failed) == (0, 1, 1, 0)
    rows = list(journal.entries(cfg.tenant, user.key))
    assert [r.uid for r in rows] == [1, 2, 3, 4, 5]
    assert all(r.load_state is LoadState.staged for r in rows)
    third = next(r for r in rows if r.uid == 3)
    assert third.sha256 == sha256_hex(bodies[2])
    assert third.size == len(bodies[2])
    assert third.message_id is not None
    assert third.message_id.startswith("<t2.")
    assert third.internaldate.timestamp() == when.timestamp()
    assert journal.item_errors(cfg.tenant) == []
    store = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key)
    assert store.get(third.sha256) == bodies[2]
    assert before == snapshot(testbed, who, ["INBOX"]), "the source mailbox changed"


@pytest.mark.testbed
def test_implicit_tls_with_the_test_ca(testbed: Any, tmp_path: Path, journal: Journal) -> None:
    user, who = new_user(testbed, ["INBOX"])
    testbed.seed_messages(
        who, [SeedMessage("INBOX", mail(1), ["\\Seen"], datetime(2020, 1, 1, tzinfo=CEST))]
    )
    cfg = base_config(
        testbed, tmp_path, tls="implicit", port=testbed.imaps_port, ca_file=str(testbed.ca_file)
    )
    assert extract_user(cfg, journal, user).staged == 1


# --- the Scalix-flavoured sandbox -------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


def test_scalix_flags_special_folders_and_groupware_on_the_sandbox(
    sandbox: Sandbox, tmp_path: Path, journal: Journal
) -> None:
    data = sandbox.config_data({"type": "mbox", "path": str(tmp_path / "mbox")})
    data["options"]["staging_dir"] = str(tmp_path / "staging")
    cfg = TenantConfig.model_validate(data)
    demo = next(
        u
        for u in sandbox.directory().users
        if "mboxadmin" not in u.capabilities and u.has_message_store and u.folders
    )
    user = ScalixUser(
        display_name=demo.display_name,
        mailnode=demo.mailnode,
        auth_id=demo.auth_id,
        addresses=tuple(demo.addresses),
    )
    result = extract_user(cfg, journal, user)
    assert result.failed == 0
    assert result.staged == result.found > 0
    flags = {f for e in journal.entries(cfg.tenant, user.key) for f in e.flags}
    assert "\\X-Forwarded" in flags
    rows = {r.folder: r for r in journal.folder_rows(cfg.tenant, user.key)}
    specials = {r.special for r in rows.values()}
    assert {"SentItems", "Calendar", "Contacts"} <= specials
    assert rows["Calendar"].folder_class == "IPF.Appointment"
    assert result.ics_exported > 0
    assert result.ics_exported + result.vcf_exported + result.properties_only > result.ics_exported
    gw = StagingStore(cfg.options.staging_dir, cfg.tenant, user.key).root / "groupware"
    assert len(list(gw.rglob("*.ics"))) == result.ics_exported
    assert len(list(gw.rglob("*.vcf"))) == result.vcf_exported


class _CountingMailbox(ScalixMailbox):
    """The real adapter, counting the calls a rerun should not need with CONDSTORE."""

    calls: ClassVar[list[tuple[str, Any]]] = []

    def flags(
        self, folder: SourceFolder, up_to_uid: int, *, changed_since: int | None = None
    ) -> dict[int, frozenset[str]]:
        found = super().flags(folder, up_to_uid, changed_since=changed_since)
        self.calls.append(("flags", (folder.name, changed_since, sorted(found))))
        return found

    def uids_above(self, folder: SourceFolder, uid: int) -> list[int]:
        self.calls.append(("uids_above", folder.name))
        return super().uids_above(folder, uid)


@pytest.mark.testbed
def test_condstore_rerun_reads_only_what_changed(
    testbed: Any, tmp_path: Path, journal: Journal
) -> None:
    """Dovecot has CONDSTORE: an unchanged folder costs its EXAMINE only, a changed one the
    flags changed since (CHANGEDSINCE), and a new message is still found."""
    user, who = new_user(testbed, ["INBOX", "Ablage"])
    when = datetime(2022, 6, 1, 8, 0, 0, tzinfo=CEST)
    testbed.seed_messages(who, [SeedMessage("Ablage", mail(i), [], when) for i in range(5)])
    cfg = base_config(testbed, tmp_path)
    assert extract_user(cfg, journal, user).staged == 5
    rows = {r.folder: r for r in journal.folder_rows(cfg.tenant, user.key)}
    assert rows["Ablage"].modseq, "HIGHESTMODSEQ was not recorded"

    _CountingMailbox.calls = []
    again = extract_user(cfg, journal, user, mailbox=_factory(_CountingMailbox))
    assert (again.found, again.flags_refreshed) == (0, 0)
    assert _CountingMailbox.calls == [], "an unchanged folder was read again"

    with open_source(cfg, user) as mbox:  # a flag changes on the source
        mbox.client.select_folder("Ablage")
        uid = sorted(mbox.client.search("ALL"))[2]
        mbox.client.add_flags([uid], [b"\\Flagged"])
    testbed.seed_messages(who, [SeedMessage("Ablage", mail(9), [], when)])
    _CountingMailbox.calls = []
    third = extract_user(cfg, journal, user, mailbox=_factory(_CountingMailbox))
    assert (third.found, third.staged, third.flags_refreshed) == (1, 1, 1)
    flag_calls = [args for kind, args in _CountingMailbox.calls if kind == "flags"]
    assert len(flag_calls) == 1
    folder, since, answered = flag_calls[0]
    assert folder == "Ablage"
    assert since == int(rows["Ablage"].modseq)
    assert answered == [uid], "more than the changed message was read"
    flagged = [e for e in journal.entries(cfg.tenant, user.key) if e.uid == uid]
    assert "\\Flagged" in flagged[0].flags
