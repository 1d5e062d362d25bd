"""The staging store's packs: what a crash, a damaged disk or another process leaves behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalix_migrate import staging
from scalix_migrate.errors import UserError
from scalix_migrate.staging import StagingStore, sha256_hex


def _store(tmp_path: Path) -> StagingStore:
    return StagingStore(tmp_path / "staging", "acme", "kim@example.test")


def _packs(store: StagingStore) -> list[str]:
    return sorted(os.listdir(store.packs_dir))


def test_a_batch_is_one_pack_and_a_message_is_stored_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    bodies = [f"message {i}\r\n".encode() * (i + 1) for i in range(50)] + [b""]
    with store.batch() as batch:
        hashes = [batch.put(b) for b in bodies + bodies[:5]]  # five duplicates in the batch
    assert hashes == [sha256_hex(b) for b in bodies + bodies[:5]]
    assert len(_packs(store)) == 1
    with store.batch() as batch:
        batch.put(bodies[7])  # already staged: nothing written
    assert len(_packs(store)) == 1
    assert [store.get(h) for h in hashes] == bodies + bodies[:5]
    assert all(store.has(h) for h in hashes)
    assert not store.has(sha256_hex(b"never staged"))


def test_a_stage_cleared_while_the_process_runs_is_written_anew(tmp_path: Path) -> None:
    """The operator removed the user's stage; the store still knew its packs. A batch with
    the same message must write it again, not rely on a pack that is gone."""
    store = _store(tmp_path)
    digest = store.put(b"staged before the stage was cleared")
    shutil.rmtree(store.root)
    with store.batch() as batch:
        assert batch.put(b"staged before the stage was cleared") == digest
    assert store.get(digest) == b"staged before the stage was cleared"
    assert len(_packs(store)) == 1


def test_a_pack_written_by_another_process_is_found(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert not store.has(sha256_hex(b"from the other worker"))
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from scalix_migrate.staging import StagingStore\n"
        "store = StagingStore(Path(sys.argv[1]), 'acme', 'kim@example.test')\n"
        "print(store.put(b'from the other worker'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "staging")],
        check=True,
        capture_output=True,
        text=True,
    )
    digest = out.stdout.strip()
    assert store.get(digest) == b"from the other worker"


def test_a_damaged_message_in_a_pack_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    digest = store.put(b"Subject: hello\r\n\r\nbody\r\n")
    (pack,) = _packs(store)
    path = Path(store.packs_dir, pack)
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0xFF  # a byte of the message, not of the index
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="damaged") as caught:
        _store_in_a_new_process(tmp_path).get(digest, user="kim@example.test")
    assert caught.value.code == "SXM-STG-001"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[:-1], id="torn-footer"),
        pytest.param(lambda raw: raw[:-60], id="torn-index"),
        pytest.param(lambda raw: raw[:20] + b"\0" * (len(raw) - 20), id="zeroed"),
        pytest.param(lambda raw: b"", id="empty"),
        pytest.param(lambda raw: raw[:-48] + b"SXMPACK1" + b"\xff" * 40, id="foreign-footer"),
    ],
)
def test_a_pack_whose_index_does_not_hold_is_skipped(tmp_path: Path, damage: object) -> None:
    store = _store(tmp_path)
    kept = store.put(b"in a good pack")
    with store.batch() as batch:
        lost = batch.put(b"in the pack that gets damaged")
    bad = next(p for p in _packs(store) if store._index.find(lost, rescan=False).pack == p)  # type: ignore[union-attr]
    path = Path(store.packs_dir, bad)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]

    fresh = _store_in_a_new_process(tmp_path)
    assert fresh.get(kept) == b"in a good pack"
    assert not fresh.has(lost)
    with pytest.raises(UserError, match="missing") as caught:
        fresh.get(lost, user="kim@example.test")
    assert caught.value.code == "SXM-STG-001"
    # Extracting it again stages it anew (the damaged pack is not relied on).
    assert fresh.put(b"in the pack that gets damaged") == lost
    assert _store_in_a_new_process(tmp_path).get(lost) == b"in the pack that gets damaged"


def test_temp_packs_of_dead_processes_of_this_host_are_removed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.put(b"something")  # makes the packs directory
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    host = staging._HOST
    leftovers = {
        "dead": f".tmp-{host}-{dead}-7",
        "alive": f".tmp-{host}-{os.getppid()}-7",  # the process that started the tests
        "other host": f".tmp-elsewhere.example-{dead}-7",
    }
    for name in leftovers.values():
        Path(store.packs_dir, name).write_bytes(b"half a batch")
    fresh = _store_in_a_new_process(tmp_path)
    assert fresh.has(sha256_hex(b"something"))
    left = set(os.listdir(store.packs_dir))
    assert leftovers["dead"] not in left
    assert {leftovers["alive"], leftovers["other host"]} <= left


def test_a_stage_of_the_earlier_layout_is_still_read(tmp_path: Path) -> None:
    """Before packs, a message was a file ``<root>/<aa>/<sha256>``: a migration started with
    that version goes on with this one."""
    store = _store(tmp_path)
    body = b"Subject: staged by 0.x\r\n\r\n"
    digest = sha256_hex(body)
    legacy = store.root / digest[:2] / digest
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(body)
    assert store.has(digest)
    assert store.get(digest) == body
    legacy.write_bytes(body + b"x")
    with pytest.raises(UserError, match="damaged"):
        store.get(digest)


def test_files_of_the_stage_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = _store(tmp_path)
        store.put(b"private")
    finally:
        os.umask(old)
    (pack,) = _packs(store)
    assert os.stat(Path(store.packs_dir, pack)).st_mode & 0o777 == 0o600
    assert os.stat(store.packs_dir).st_mode & 0o777 == 0o700


def _store_in_a_new_process(tmp_path: Path) -> StagingStore:
    """A store that shares no index with the ones before (as another process's would)."""
    staging._INDEXES.clear()
    return _store(tmp_path)
