"""The limit of these servers for a Python client: fetch + APPEND, pipelined, nothing else.

No staging, no journal, no verify, no folder mapping, no retries: one thread reads a folder
in UID batches (``BODY.PEEK[] FLAGS INTERNALDATE``) and hands each batch over a bounded queue
to a second thread, which appends it (MULTIAPPEND where advertised) on its own connection.
``compare_peers.py`` runs it as the reference the core is measured against; it is not a
migration tool (it copies folders under their source names and stops at the first error)::

    python bench/minimal_copier.py SRC_PORT SRC_LOGIN SRC_PASSFILE DST_PORT DST_LOGIN DST_PASSFILE
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

BATCH = 200
_DONE = object()


def _login(port: int, login: str, passfile: str) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
    client.login(login, Path(passfile).read_text().strip())
    client._imap.debug = 0  # imaplib's trace formats every literal otherwise
    return client


def _append_worker(dst: IMAPClient, work: queue.Queue[Any], failed: list[BaseException]) -> None:
    multi = b"MULTIAPPEND" in dst.capabilities()
    while True:
        item = work.get()
        if item is _DONE:
            return
        folder, msgs = item
        try:
            if msgs is None:  # the destination connection belongs to this thread alone
                dst.create_folder(folder)
            elif multi:
                dst.multiappend(folder, msgs)
            else:
                for m in msgs:
                    dst.append(folder, m["msg"], m["flags"], m["date"])
        except BaseException as exc:
            failed.append(exc)
            return


def copy(src: IMAPClient, dst: IMAPClient) -> int:
    work: queue.Queue[Any] = queue.Queue(maxsize=4)  # bounded: memory stays a few batches
    failed: list[BaseException] = []
    appender = threading.Thread(target=_append_worker, args=(dst, work, failed), daemon=True)
    appender.start()
    existing = {name for _, _, name in dst.list_folders()}
    copied = 0
    for flags, _, name in src.list_folders():
        if b"\\Noselect" in flags or b"\\NoSelect" in flags:
            continue
        if name not in existing:
            work.put((name, None))
        src.select_folder(name, readonly=True)
        uids = src.search("ALL")
        for i in range(0, len(uids), BATCH):
            answer = src.fetch(uids[i : i + BATCH], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            msgs = [
                {
                    "msg": a[b"BODY[]"],
                    "flags": [f for f in a[b"FLAGS"] if f.lower() != b"\\recent"],
                    "date": a[b"INTERNALDATE"],
                }
                for _, a in sorted(answer.items())
            ]
            work.put((name, msgs))
            copied += len(msgs)
            if failed:
                raise failed[0]
    work.put(_DONE)
    appender.join()
    if failed:
        raise failed[0]
    return copied


def main() -> None:
    src_port, src_login, src_pass, dst_port, dst_login, dst_pass = sys.argv[1:7]
    src = _login(int(src_port), src_login, src_pass)
    dst = _login(int(dst_port), dst_login, dst_pass)
    try:
        print(f"copied {copy(src, dst)} messages")
    finally:
        src.logout()
        dst.logout()


if __name__ == "__main__":
    main()
