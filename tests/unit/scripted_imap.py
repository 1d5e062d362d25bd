"""A scripted IMAP server speaking captured Scalix lines, for the adapter's unit tests.

It runs in a thread on 127.0.0.1, serves ``Script.connections`` connections one after the
other (one by default), records every command it receives
(literals included) and answers from a small mailbox model with the attributes, flags and
texts captured from Scalix 12 (scalix.md §3.1). It is a fake of Scalix, not of IMAP: just
enough of the protocol for ``ScalixMailbox``.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

SCALIX_LIST = [
    rb"(\X-SpecialFolder=SentItems \X-DirectRef=00011a035dc33e08 \X-ModDate=20151029071158 "
    rb'\X-Total-Msgs=2 \X-Unseen-Msgs=0) "/" "Sent Items"',
    rb"(\X-DirectRef=00011a0054a8e393 \X-ModDate=20151029140200 \X-Total-Msgs=0 "
    rb'\X-Unseen-Msgs=0) "/" INBOX',
    rb"(\X-DirectRef=000a9d8db93e5826 \X-ModDate=20151112134408 \X-Total-Msgs=0 "
    rb'\X-Unseen-Msgs=0) "/" &BD8EMARABD8EMA-_&BD8EMA-777&BEAEPwQwBEA-_&BDIEMAQ,-',
    rb'(X-FolderClass=IPF.Appointment \X-SpecialFolder=Calendar \X-DirectRef=01) "/" Calendar',
    rb'(\NoSelect \X-SpecialFolder=OtherUsersRoot) "/" "Other Users"',
    rb'(\NoSelect) "/" "Public Folders"',
    rb'(\NoSelect) "/" "Public Folders/Team"',
]
LOGIN_REFUSED = b"LOGIN failure, user name or password rejected"


@dataclass
class Msg:
    uid: int
    body: bytes
    flags: str = r"\Seen $Forwarded \X-Forwarded"
    internaldate: str = "22-Mar-2017 07:35:48 -0400"


@dataclass
class Script:
    """What the fake server holds and how it behaves."""

    admin_password: str = "sup3r secret"
    literal_plus: bool = False
    messages: dict[str, list[Msg]] = field(default_factory=dict)  # raw folder name -> messages
    uidvalidity: int = 42
    refuse_body_uids: set[int] = field(default_factory=set)  # FETCH ... NO when asked alone
    missing_body_uids: set[int] = field(default_factory=set)  # answered without BODY[]
    extra_list: list[bytes] = field(default_factory=list)
    connections: int = 1  # served one after the other; the script may change in between


class ScriptedIMAP(threading.Thread):
    def __init__(self, script: Script) -> None:
        super().__init__(daemon=True)
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.commands: list[bytes] = []
        self.login_user: bytes | None = None
        self.selected: str | None = None
        self.readonly = False

    def __enter__(self) -> ScriptedIMAP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.join(timeout=5)

    # --- protocol -------------------------------------------------------------------

    def run(self) -> None:
        for _ in range(self.script.connections):
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.selected, self.readonly = None, False
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn, conn.makefile("rwb") as f:
            caps = b"IMAP4rev1 X-SCALIX-1 NAMESPACE" + (
                b" LITERAL+" if self.script.literal_plus else b""
            )
            self.caps = caps
            f.write(b"* OK [CAPABILITY " + caps + b"] Scalix IMAP server ready\r\n")
            f.flush()
            while True:
                try:
                    line = self._read_command(f)
                except (OSError, ValueError):
                    return
                if line is None:
                    return
                self.commands.append(line)
                if not self._dispatch(f, line):
                    return

    def _read_command(self, f: Any) -> bytes | None:
        reader = f
        line: bytes = reader.readline()
        if not line:
            return None
        out = b""
        while True:
            m = re.search(rb"\{(\d+)(\+?)\}\r\n$", line)
            if not m:
                return out + line.rstrip(b"\r\n")
            if not m.group(2):
                reader.write(b"+ go ahead\r\n")
                reader.flush()
            data = reader.read(int(m.group(1)))
            out += line[: m.start()] + b"<<" + data + b">>"
            line = reader.readline()

    def _dispatch(self, f: Any, line: bytes) -> bool:
        w = f.write
        tag, _, rest = line.partition(b" ")
        cmd, _, args = rest.partition(b" ")
        cmd = cmd.upper()
        if cmd == b"UID":
            cmd2, _, args = args.partition(b" ")
            cmd = b"UID " + cmd2.upper()
        if cmd == b"CAPABILITY":
            w(b"* CAPABILITY " + self.caps + b"\r\n" + tag + b" OK done\r\n")
        elif cmd == b"LOGIN":
            self.login_user = args
            pw = self.script.admin_password.encode()
            quoted_pw = b'"' + pw + b'"'
            if args.endswith(quoted_pw) or args.endswith(b"<<" + pw + b">>"):
                w(tag + b" OK LOGIN completed\r\n")
            else:
                w(tag + b" NO " + LOGIN_REFUSED + b"\r\n")
        elif cmd == b"NAMESPACE":
            w(
                b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Public Folders/" "/"))\r\n'
                + tag
                + b" OK done\r\n"
            )
        elif cmd == b"LIST":
            for item in [*SCALIX_LIST, *self.script.extra_list]:
                w(b"* LIST " + item + b"\r\n")
            w(tag + b" OK LIST completed\r\n")
        elif cmd in (b"EXAMINE", b"SELECT"):
            name = args.strip().strip(b'"').decode()
            msgs = self.script.messages.get(name, [])
            self.selected, self.readonly = name, cmd == b"EXAMINE"
            w(b"* %d EXISTS\r\n* 0 RECENT\r\n" % len(msgs))
            w(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % self.script.uidvalidity)
            w(
                tag
                + (b" OK [READ-ONLY] done\r\n" if self.readonly else b" OK [READ-WRITE] done\r\n")
            )
        elif cmd == b"UID SEARCH":
            uids = self._uids(args.split()[-1])
            w(b"* SEARCH " + b" ".join(b"%d" % u for u in uids) + b"\r\n" + tag + b" OK done\r\n")
        elif cmd == b"UID FETCH":
            self._fetch(w, tag, args)
        elif cmd == b"LOGOUT":
            w(b"* BYE logging out\r\n" + tag + b" OK done\r\n")
            f.flush()
            return False
        else:
            w(tag + b" BAD unknown command\r\n")
        f.flush()
        return True

    def _box(self) -> list[Msg]:
        return self.script.messages.get(self.selected or "", [])

    def _uids(self, spec: bytes) -> list[int]:
        box = self._box()
        top = max((m.uid for m in box), default=0)
        wanted: set[int] = set()
        for part in spec.decode().split(","):
            lo, _, hi = part.partition(":")
            lo_n = top if lo == "*" else int(lo)
            hi_n = lo_n if not hi else (top if hi == "*" else int(hi))
            lo_n, hi_n = min(lo_n, hi_n), max(lo_n, hi_n)
            wanted.update(m.uid for m in box if lo_n <= m.uid <= hi_n)
        return sorted(wanted)

    def _fetch(self, w: Any, tag: bytes, args: bytes) -> None:
        write = w
        spec, _, items = args.partition(b" ")
        uids = self._uids(spec)
        want_body = b"BODY.PEEK[]" in items
        if want_body and b"BODY[]" in items.replace(b"BODY.PEEK[]", b""):
            raise AssertionError("the adapter must only PEEK")
        if want_body and set(uids) & self.script.refuse_body_uids:
            write(tag + b" NO [SERVERBUG] message cannot be read\r\n")
            return
        by_uid = {m.uid: m for m in self._box()}
        for seq, uid in enumerate(uids, start=1):
            m = by_uid[uid]
            head = b'* %d FETCH (UID %d RFC822.SIZE %d FLAGS (%s) INTERNALDATE "%s"' % (
                seq,
                uid,
                len(m.body),
                m.flags.encode(),
                m.internaldate.encode(),
            )
            if want_body and uid not in self.script.missing_body_uids:
                head += b" BODY[] {%d}\r\n" % len(m.body) + m.body
            write(head + b")\r\n")
        write(tag + b" OK FETCH completed\r\n")
