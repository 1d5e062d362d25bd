"""scalix-migrate's core against imapsync and mbsync: one corpus, one source, one run.

Starts the real test bed (``tests/testbed/bed.py``: Dovecot playing Scalix with the
``mboxadmin:<admin>:<user>`` login, a Dovecot destination, sshd), seeds ``--users`` users with
about ``--messages`` messages each (``bench/peer_corpus.py``: attachments, 8-bit headers, no
Message-ID, shared Message-IDs, duplicates, keywords, nested non-ASCII folders, dates in several
zones), then copies the same mailboxes from the same source into fresh destination logins with:

* ``scalix-migrate``: ``extract_user`` -> ``load_user`` -> ``verify_user`` per user, users in a
  thread pool (``--parallel`` at once, and one at a time), in a child process;
* ``imapsync`` (``--host1 … --user1 mboxadmin:<admin>:<user> … --nossl1 --nossl2``);
* ``mbsync`` (isync; a generated config: IMAPAccount/IMAPStore/Channel, ``CopyArrivalDate yes``,
  ``Sync Pull``, ``Create Near``);

peers as one process per user, ``--parallel`` at once and one at a time. For each run: wall
time, messages/s, MB/s (of the source's bytes), peak RSS (``wait4`` rusage of each child
process, the largest), a rerun's time and what it added, and fidelity measured the same way for
all (``peer_corpus.compare_folder``), after the first run and after the rerun. A peer that is
not installed is reported as such, never estimated. Prints one table and writes
``bench/results/compare_peers-<stamp>.json`` / ``.md`` and ``bench/results/latest.md``::

    .venv/bin/python bench/compare_peers.py [--users 5] [--messages 1000] [--parallel 3]
        [--tools scalix-migrate,imapsync,mbsync] [--no-serial] [--seed 1]

Quick run: ``--users 2 --messages 100 --no-serial``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))  # tests.testbed and peer_corpus come from the checkout

from peer_corpus import FOLDERS, KINDS, Held, compare_folder, held, make_corpus  # noqa: E402

from scalix_migrate.records import ScalixUser  # noqa: E402

# imapsync 2.229 as shipped in shared/peers (read-only there: run through perl).
IMAPSYNC_SCRIPT = Path(
    os.environ.get("SXM_IMAPSYNC", REPO.parent / "shared" / "peers" / "imapsync")
)
IMAPSYNC = ["perl", str(IMAPSYNC_SCRIPT)]
# Folders the destination Dovecot creates for every login (not on the source).
DEST_OWN_FOLDERS = ("Archive", "Junk", "Sent", "Trash")
RUN_TIMEOUT_S = 1800.0
WORKER_MARK = "SXM-WORKER-RESULT "  # one tool run (all users); a hung peer is killed, and says so
Snapshot = dict[str, dict[str, list[Held]]]  # user address -> folder -> messages


@dataclass
class Result:
    tool: str
    at_once: int
    available: bool = True
    note: str = ""
    wall_s: float = 0.0
    rerun_s: float = 0.0
    peak_rss_mb: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    fidelity: dict[str, int] = field(default_factory=dict)
    fidelity_rerun: dict[str, int] = field(default_factory=dict)
    rerun_added: int = 0
    steps: dict[str, Any] = field(default_factory=dict)  # scalix-migrate: its own accounts
    msg_s: float = 0.0
    mb_s: float = 0.0
    delta_s: float = 0.0  # after 1 % new messages and some flag changes at the source
    fidelity_delta: dict[str, int] = field(default_factory=dict)
    prefect: dict[str, float] = field(default_factory=dict)  # end-to-end runs: from the API


# --- child processes -------------------------------------------------------------------------


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    *,
    timeout_s: float = RUN_TIMEOUT_S,
) -> tuple[int, float]:
    """Run ``argv`` (output to ``log``); return (exit code, peak RSS in MB of that program).

    The RSS comes from ``/usr/bin/time -f %M``, not from our own ``wait4``: a child forked from
    this (large) Python process counts the parent's pages in its ``ru_maxrss`` until it execs,
    which gave every peer this process's ~95 MB. Per process, so parallel runs do not mix."""
    rss_file = log.with_suffix(f".rss{uuid.uuid4().hex[:6]}")
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            timed, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pid, status, usage = os.wait4(proc.pid, 0)
            with log.open("a") as out:
                out.write(f"\n[compare_peers] killed after {timeout_s:.0f} s\n")
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    del usage  # see the docstring
    try:
        kib = int(rss_file.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        kib = 0  # killed before /usr/bin/time could write it
    return proc.returncode, kib / 1024


def spawn_all(jobs: list[Any], at_once: int) -> tuple[float, list[int], float]:
    """Run the jobs ``at_once`` at a time; (wall s, exit codes, largest peak RSS in MB)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=at_once) as pool:
        done = list(pool.map(lambda job: spawn(*job), jobs))
    return time.perf_counter() - t0, [c for c, _ in done], max(r for _, r in done)


# --- reading both sides ----------------------------------------------------------------------


def snapshot(port: int, logins: dict[str, str], password: str) -> Snapshot:
    """Every selectable folder of every login, reduced to :class:`Held` (read-only)."""
    from tests.testbed.imap import fetch_all, login

    out: Snapshot = {}
    for key, name in logins.items():
        with login(port, name, password) as client:
            folders = [
                f for flags, _, f in client.list_folders() if b"\\Noselect" not in set(flags)
            ]
            out[key] = {
                str(f): [held(m.body, m.flags, m.internaldate) for m in fetch_all(client, f)]
                for f in folders
            }
    return out


def fidelity(src: Snapshot, dst: Snapshot, target: Callable[[str, str], str]) -> dict[str, int]:
    """Sum of :func:`compare_folder` over users and folders; ``target(user, folder)`` names
    the destination folder a tool should have put a source folder into."""
    total: Counter[str] = Counter({k: 0 for k in KINDS})
    exact = 0
    for user, folders in src.items():
        got = dst.get(user, {})
        wanted = {target(user, f): f for f in folders}
        for dest_folder, msgs in got.items():
            if dest_folder not in wanted:
                total["extra"] += len(msgs)
        for dest_folder, folder in wanted.items():
            have = got.get(dest_folder, [])
            total.update(compare_folder(folders[folder], have))
            exact += sum((Counter(folders[folder]) & Counter(have)).values())
    return {
        "exact": exact,
        **total,
        "dest_total": sum(len(m) for u in dst.values() for m in u.values()),
    }


# --- the tools -------------------------------------------------------------------------------


@dataclass
class Bench:
    bed: Any
    work: Path
    users: list[ScalixUser]
    source: Snapshot
    src_secret: Path
    dst_secret: Path
    prefect_api: str | None = None
    deltas: list[tuple[Result, str, Callable[[], tuple[float, list[int], float]], Any]] = field(
        default_factory=list
    )

    def src_login(self, user: ScalixUser) -> str:
        return f"mboxadmin:{self.bed.admin_user}:{user.addresses[0]}"

    def dst_login(self, user: ScalixUser, label: str) -> str:
        return f"{user.addresses[0].split('@')[0]}-{label}@dest.test"

    def measure(
        self,
        result: Result,
        label: str,
        run: Callable[[], tuple[float, list[int], float]],
        target: Callable[[str, str], str],
    ) -> None:
        logins = {u.addresses[0]: self.dst_login(u, label) for u in self.users}
        result.wall_s, result.exit_codes, result.peak_rss_mb = run()
        dst = snapshot(self.bed.dest_imap_port, logins, self.bed.dest_password)
        result.fidelity = fidelity(self.source, dst, target)
        result.rerun_s, codes, rss = run()
        result.exit_codes += codes
        result.peak_rss_mb = max(result.peak_rss_mb, rss)
        dst = snapshot(self.bed.dest_imap_port, logins, self.bed.dest_password)
        result.fidelity_rerun = fidelity(self.source, dst, target)
        result.rerun_added = result.fidelity_rerun["dest_total"] - result.fidelity["dest_total"]
        self.deltas.append((result, label, run, target))

    def run_deltas(self, changed_source: Snapshot) -> None:
        """After the source gained new mail and flag changes: each tool's next run."""
        for result, label, run, target in self.deltas:
            logins = {u.addresses[0]: self.dst_login(u, label) for u in self.users}
            result.delta_s, codes, rss = run()
            result.exit_codes += codes
            result.peak_rss_mb = max(result.peak_rss_mb, rss)
            dst = snapshot(self.bed.dest_imap_port, logins, self.bed.dest_password)
            result.fidelity_delta = fidelity(changed_source, dst, target)

    def scalix_migrate_core(self, at_once: int) -> Result:
        label = f"core{at_once}"
        run_dir = self.work / label
        run_dir.mkdir()
        _, cfg = self.bed.make_config(
            run_dir,
            destination={
                "type": "imap",
                "preset": "dovecot",
                "login_template": "{local_part}-" + label + "@dest.test",
            },
            options={"concurrency": {"users": at_once}},
        )
        users_file = run_dir / "users.json"
        users_file.write_text(json.dumps([_user_data(u) for u in self.users]))
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "sxm-worker",
            str(run_dir / "tenant.yaml"),
            str(users_file),
            str(at_once),
        ]
        log = run_dir / "worker.log"
        result = Result("scalix-migrate core", at_once)
        self.measure(result, label, lambda: spawn_all([(argv, log)], 1), self._journal_target(cfg))
        runs = [
            json.loads(line[len(WORKER_MARK) :])
            for line in log.read_text().splitlines()
            if line.startswith(WORKER_MARK)
        ]
        for name, users in zip(("first", "rerun"), runs, strict=False):
            result.steps[name] = {
                **{k: round(sum(u[k] for u in users), 2) for k in ("transfer_s", "verify_s")},
                **{
                    k: sum(u[k] for u in users)
                    for k in ("staged", "appended", "failed", "verify_differences")
                },
            }
        return result

    def scalix_migrate_run(self, at_once: int, *, temporary_server: bool = False) -> Result:
        """``scalix-migrate run tenant.yaml`` as an operator runs it: discovery, preflight,
        the flow, the report; against the running ``prefect server`` (or, with
        ``temporary_server``, the CLI's own temporary one)."""
        label = f"{'tmp' if temporary_server else 'run'}{at_once}"
        run_dir = self.work / label
        run_dir.mkdir()
        _, cfg = self.bed.make_config(
            run_dir,
            destination={
                "type": "imap",
                "preset": "dovecot",
                "login_template": "{local_part}-" + label + "@dest.test",
            },
            options={
                "concurrency": {"users": at_once},
                "users": {"include": [u.addresses[0] for u in self.users]},
            },
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env["PREFECT_HOME"] = str(self.work / "prefect-home")
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        if not temporary_server:
            assert self.prefect_api is not None
            env["PREFECT_API_URL"] = self.prefect_api
        argv = [
            str(Path(sys.executable).with_name("scalix-migrate")),
            "run",
            str(run_dir / "tenant.yaml"),
        ]
        log = run_dir / "run.log"
        tool = "scalix-migrate run" + (" (temporary server)" if temporary_server else "")
        result = Result(tool, at_once)

        def run() -> tuple[float, list[int], float]:
            started = time.time()
            outcome = spawn_all([(argv, log, env)], 1)
            if not result.prefect and not temporary_server and self.prefect_api is not None:
                # The full run's flow run, read before the rerun makes another.
                result.prefect = prefect_timings(self.prefect_api, started, len(self.users))
            return outcome

        self.measure(result, label, run, self._journal_target(cfg))
        return result

    def limit(self, at_once: int) -> Result:
        """bench/minimal_copier.py per user: fetch + APPEND, pipelined, nothing else."""
        label = f"limit{at_once}"
        run_dir = self.work / label
        run_dir.mkdir()
        jobs: list[tuple[list[str], Path] | tuple[list[str], Path, dict[str, str]]] = []
        for u in self.users:
            argv = [
                sys.executable, str(REPO / "bench" / "minimal_copier.py"),
                str(self.bed.imap_port), self.src_login(u), str(self.src_secret),
                str(self.bed.dest_imap_port), self.dst_login(u, label), str(self.dst_secret),
            ]  # fmt: skip
            jobs.append((argv, run_dir / f"{u.addresses[0]}.log"))
        result = Result("limit: minimal Python copier", at_once)
        self.measure(result, label, lambda: spawn_all(jobs, at_once), lambda _u, f: f)
        return result

    def _journal_target(self, cfg: Any) -> Callable[[str, str], str]:
        from scalix_migrate.state import Journal

        def target(address: str, folder: str) -> str:
            user = next(u for u in self.users if u.addresses[0] == address)
            with Journal.open(url=cfg.options.state.url, directory=cfg.options.state.dir) as j:
                rows = {r.folder: r.dest_folder for r in j.folder_rows(cfg.tenant, user.key)}
            return str(rows.get(folder) or folder)

        return target

    def imapsync(self, at_once: int) -> Result:
        label = f"imapsync{at_once}"
        run_dir = self.work / label
        run_dir.mkdir()
        jobs = []
        for u in self.users:
            argv = [
                *IMAPSYNC, "--host1", "127.0.0.1", "--port1", str(self.bed.imap_port),
                "--user1", self.src_login(u), "--passfile1", str(self.src_secret),
                "--nossl1", "--notls1",
                "--host2", "127.0.0.1", "--port2", str(self.bed.dest_imap_port),
                "--user2", self.dst_login(u, label), "--passfile2", str(self.dst_secret),
                "--nossl2", "--notls2",
                "--nolog", "--noreleasecheck", "--tmpdir", str(run_dir),
            ]  # fmt: skip
            jobs.append((argv, run_dir / f"{u.addresses[0]}.log"))
        result = Result("imapsync", at_once)
        self.measure(result, label, lambda: spawn_all(jobs, at_once), lambda _u, f: f)
        return result

    def mbsync(self, at_once: int) -> Result:
        label = f"mbsync{at_once}"
        run_dir = self.work / label
        run_dir.mkdir()
        jobs = []
        for i, u in enumerate(self.users):
            state = run_dir / f"state{i}"
            state.mkdir()
            conf = run_dir / f"mbsyncrc{i}"
            conf.write_text(
                _mbsync_account("src", self.bed.imap_port, self.src_login(u), self.src_secret)
                + _mbsync_account(
                    "dst", self.bed.dest_imap_port, self.dst_login(u, label), self.dst_secret
                )
                + "Channel copy\nFar :src:\nNear :dst:\nCreate Near\nSync Pull\n"
                # The destination's own auto-created folders are not the source's to copy.
                f"Patterns * {' '.join('!' + f for f in DEST_OWN_FOLDERS)}\n"
                f"Expunge None\nRemove None\nCopyArrivalDate yes\nSyncState {state}/\n"
            )
            conf.chmod(0o600)
            jobs.append((["mbsync", "-c", str(conf), "-a"], run_dir / f"mbsync{i}.log"))
        result = Result("mbsync", at_once)
        self.measure(result, label, lambda: spawn_all(jobs, at_once), lambda _u, f: f)
        return result


def _mbsync_account(name: str, port: int, user: str, secret: Path) -> str:
    quoted = user.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'IMAPAccount {name}\nHost 127.0.0.1\nPort {port}\nUser "{quoted}"\n'
        f'PassCmd "cat {shlex.quote(str(secret))}"\nSSLType None\nAuthMechs LOGIN\nTimeout 60\n'
        f"PipelineDepth 50\n\nIMAPStore {name}\nAccount {name}\n\n"
    )


def _user_data(u: ScalixUser) -> dict[str, Any]:
    return {
        "display_name": u.display_name,
        "mailnode": u.mailnode,
        "auth_id": u.auth_id,
        "addresses": list(u.addresses),
        "has_message_store": True,
    }


def sxm_worker(config: str, users_file: str, at_once: str) -> None:
    """The child process: transfer (extract + load at once) -> verify each user,
    ``at_once`` users at a time."""
    from scalix_migrate.config import load_config
    from scalix_migrate.steps import journal_for
    from scalix_migrate.transfer import transfer_user
    from scalix_migrate.verify import verify_user

    cfg = load_config(Path(config))
    users = [
        ScalixUser(**{**d, "addresses": tuple(d["addresses"])})
        for d in json.loads(Path(users_file).read_text())
    ]

    def one(user: ScalixUser) -> dict[str, Any]:
        with journal_for(cfg) as journal:
            t0 = time.perf_counter()
            moved = transfer_user(cfg, journal, user)
            t1 = time.perf_counter()
            vr = verify_user(cfg, journal, user)
            t2 = time.perf_counter()
        return {
            "transfer_s": t1 - t0,
            "verify_s": t2 - t1,
            "user": user.key,
            "staged": moved.extract.staged,
            "appended": moved.load.appended,
            "already_present": moved.load.already_present,
            "failed": moved.load.failed,
            "verify_differences": len(vr.differences),
        }

    with ThreadPoolExecutor(max_workers=int(at_once)) as pool:
        print(WORKER_MARK + json.dumps(list(pool.map(one, users))), flush=True)


# --- Prefect -------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prefect_server(
    home: Path, log: Path, *, database_url: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``prefect server start`` on a free loopback port, its own home; its database
    SQLite in that home, or ``database_url`` (``postgresql+asyncpg://…``)."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    prefect = str(Path(sys.executable).with_name("prefect"))
    argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return proc, api
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"prefect server did not start; see {log}")


def _ts(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else 0.0


def task_run_breakdown(tasks: list[dict[str, Any]], flow_start: float, flow_end: float) -> Any:
    """Seconds per kind of task run (the name before ``-<user>``: transfer, verify,
    preflight…), summed, and the flow run's time in which *no* task run was running: the
    orchestration the flow adds (task submission, state changes, result reads, progress
    artifacts), true whether users overlap or not."""
    per_kind: dict[str, float] = {}
    spans = []
    for t in tasks:
        if not (t.get("start_time") and t.get("end_time")):
            continue
        start, end = _ts(t["start_time"]), _ts(t["end_time"])
        kind = str(t.get("name", "?")).split("-", 1)[0]
        per_kind[kind] = round(per_kind.get(kind, 0.0) + end - start, 2)
        spans.append((start, end))
    covered, reach = 0.0, flow_start
    for start, end in sorted(spans):
        start, end = max(start, reach), min(end, flow_end)
        if end > start:
            covered += end - start
            reach = end
    return per_kind, max(0.0, flow_end - flow_start - covered)


def prefect_timings(api: str, started_at: float, n_users: int) -> dict[str, Any]:
    """From the Prefect API, for the newest flow run: seconds from the CLI's start to the
    flow run's start and to its first task run, the flow run's own duration, its task runs,
    the seconds per kind of task run, and the time per user in which no task run ran (the
    flow's own orchestration: see task_run_breakdown)."""
    import httpx

    runs = httpx.post(
        f"{api}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 1}, timeout=30
    ).json()
    if not runs:
        return {}
    flow_run = runs[0]
    tasks: list[dict[str, Any]] = []
    while True:
        page = httpx.post(
            f"{api}/task_runs/filter",
            json={"flow_runs": {"id": {"any_": [flow_run["id"]]}}, "limit": 200,
                  "offset": len(tasks)},
            timeout=30,
        ).json()  # fmt: skip
        tasks += page
        if len(page) < 200:
            break
    flow_start, flow_end = _ts(flow_run["start_time"]), _ts(flow_run["end_time"])
    starts = sorted(_ts(t["start_time"]) for t in tasks if t.get("start_time"))
    per_kind, outside = task_run_breakdown(tasks, flow_start, flow_end)
    return {
        "to_flow_start_s": round(flow_start - started_at, 2),
        "to_first_task_s": round(starts[0] - started_at, 2) if starts else 0.0,
        "flow_run_s": round(flow_end - flow_start, 2),
        "task_runs": float(len(tasks)),
        "task_run_s_by_kind": per_kind,
        "no_task_running_per_user_ms": round(1000 * outside / n_users),
    }


# --- setup and reporting ---------------------------------------------------------------------


def seed(bed: Any, n_users: int, n_messages: int, seed_value: int) -> list[ScalixUser]:
    from scalix_migrate.sandbox.directory import DirectoryUser

    tag = uuid.uuid4().hex[:6]
    mailnode = bed.directory().mailnodes[0]
    users = []
    for i in range(n_users):
        address = f"pb{i}-{tag}@example.test"
        du = DirectoryUser(
            display_name=f"Peer Bench {i} {tag}",
            mailnode=mailnode,
            auth_id=f"pb{i}-{tag}",
            addresses=[address],
            password=uuid.uuid4().hex,
            folders=[spec for spec, _ in FOLDERS if spec.name != "INBOX"],
        )
        bed.add_user(du)
        users.append(
            ScalixUser(du.display_name, mailnode, du.auth_id, (address,), has_message_store=True)
        )

    def fill(i: int) -> None:  # each user's corpus is fixed by its seed: order does not matter
        corpus = make_corpus(seed_value * 1000 + i, f"pb{i}", n_messages)
        bed.seed_messages(users[i].addresses[0], corpus)

    # Four users at once: one APPEND after another took ten minutes for 100,000 messages.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(fill, range(n_users)))
    return users


def table(results: list[Result], n_msgs: int, mbytes: float) -> str:
    head = (
        "| tool | users at once | full run s | msg/s | MB/s | peak RSS MB | rerun s "
        "| rerun added | delta s | exact | missing | extra | changed | flags | dates "
        "| exact after delta | exit |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in results:
        if not r.available:
            lines.append(f"| {r.tool} | {r.at_once} | not run: {r.note} |" + " |" * 14)
            continue
        f, d = r.fidelity, r.fidelity_delta
        codes = sorted(set(r.exit_codes))
        delta = f"{r.delta_s:.2f}" if d else ""
        after = (
            f"{d['exact']} (missing {d['missing']}, changed {d['changed']}, flags {d['flags']})"
            if d
            else ""
        )
        lines.append(
            f"| {r.tool} | {r.at_once} | {r.wall_s:.1f} | {n_msgs / r.wall_s:.0f} "
            f"| {mbytes / r.wall_s:.1f} | {r.peak_rss_mb:.0f} | {r.rerun_s:.2f} "
            f"| {r.rerun_added} | {delta} | {f['exact']} | {f['missing']} | {f['extra']} "
            f"| {f['changed']} | {f['flags']} | {f['dates']} | {after} "
            f"| {','.join(map(str, codes))} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    """Throughput ratios in this run: scalix-migrate against each peer and the limit."""
    by = {(r.tool, r.at_once): r for r in results if r.available and r.wall_s}
    lines = []
    for (tool, n), r in sorted(by.items()):
        if not tool.startswith("scalix-migrate"):
            continue
        parts = []
        for peer in ("mbsync", "imapsync", "limit: minimal Python copier"):
            other = by.get((peer, n))
            if other is not None:
                parts.append(f"{other.wall_s / r.wall_s:.2f}x {peer}")
        parts.append(f"rerun {100 * r.rerun_s / r.wall_s:.1f} % of the full run")
        if r.fidelity_delta:
            parts.append(f"delta {100 * r.delta_s / r.wall_s:.1f} % of the full run")
        lines.append(f"- {tool}, {n} at once: " + "; ".join(parts))
    return "\n".join(lines)


def change_source(bed: Any, users: list[ScalixUser], seed_value: int) -> tuple[int, int]:
    """1 % new messages per user and \\Flagged set on about 2 % of each INBOX (the delta)."""
    from tests.testbed.imap import login

    added = flagged = 0
    for i, u in enumerate(users):
        address = u.addresses[0]
        with login(bed.imap_port, f"mboxadmin:{bed.admin_user}:{address}", bed.admin_password) as c:
            c.select_folder("INBOX")
            uids = c.search("ALL")
            some = uids[:: max(1, len(uids) // max(1, len(uids) // 50))][: max(1, len(uids) // 50)]
            c.add_flags(some, [b"\\Flagged"])
            flagged += len(some)
            total = sum(c.folder_status(f, [b"MESSAGES"])[b"MESSAGES"] for f in _folders(c))
        new = make_corpus(seed_value * 7919 + i, f"delta{i}", max(1, total // 100))
        bed.seed_messages(address, new)
        added += len(new)
    return added, flagged


def _folders(client: Any) -> list[str]:
    return [str(f) for flags, _, f in client.list_folders() if b"\\Noselect" not in set(flags)]


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


TOOLS = ("run", "core", "limit", "imapsync", "mbsync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000, help="per user, about")
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"of {', '.join(TOOLS)}")
    parser.add_argument(
        "--temporary-server",
        action="store_true",
        help="also `scalix-migrate run` with the CLI's temporary Prefect server (1 at once)",
    )
    parser.add_argument("--no-serial", action="store_true", help="skip the 1-at-a-time runs")
    parser.add_argument("--no-delta", action="store_true", help="skip the delta runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the tools' logs and configs")
    args = parser.parse_args()
    if not (1 <= args.users <= 50 and 1 <= args.messages <= 20000 and 1 <= args.parallel <= 8):
        parser.error("--users 1..50, --messages 1..20000, --parallel 1..8")
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(TOOLS):
        parser.error(f"--tools: unknown {sorted(unknown)}; known: {', '.join(TOOLS)}")

    from tests.testbed.bed import running_testbed

    started = time.perf_counter()
    load_start = os.getloadavg()
    modes = [args.parallel] + ([] if args.no_serial or args.parallel == 1 else [1])
    results: list[Result] = []
    server: subprocess.Popen[bytes] | None = None
    # The fast emulators run an admin-command batch in one process: the stand-in's Python
    # start-up per command (~0.1 s) is the test bed's cost, not the client's or Scalix's.
    with running_testbed(fast_emulators=True) as bed:
        work = Path(tempfile.mkdtemp(prefix="sxm-peers-"))
        try:
            t0 = time.perf_counter()
            users = seed(bed, args.users, args.messages, args.seed)
            seed_s = time.perf_counter() - t0
            logins = {u.addresses[0]: f"mboxadmin:{bed.admin_user}:{u.addresses[0]}" for u in users}
            source = snapshot(bed.imap_port, logins, bed.admin_password)
            n_msgs = sum(len(m) for f in source.values() for m in f.values())
            mbytes = sum(h.size for f in source.values() for m in f.values() for h in m) / 1e6
            print(
                f"corpus: {len(users)} users, {n_msgs} messages, {mbytes:.1f} MB, "
                f"seeded in {seed_s:.1f} s (test bed up in {bed.startup_s:.1f} s)",
                flush=True,
            )
            secrets = work / "secrets"
            secrets.mkdir(mode=0o700)
            src_secret, dst_secret = secrets / "src", secrets / "dst"
            src_secret.write_text(bed.admin_password + "\n")
            dst_secret.write_text(bed.dest_password + "\n")
            bench = Bench(bed, work, users, source, src_secret, dst_secret)
            if "run" in tools:
                t0 = time.perf_counter()
                server, bench.prefect_api = start_prefect_server(
                    work / "prefect-home", work / "prefect-server.log"
                )
                print(f"prefect server up in {time.perf_counter() - t0:.1f} s", flush=True)
            runners: dict[str, Callable[[int], Result]] = {
                "run": bench.scalix_migrate_run,
                "core": bench.scalix_migrate_core,
                "limit": bench.limit,
                "imapsync": bench.imapsync,
                "mbsync": bench.mbsync,
            }
            plan = [(tool, n) for tool in tools for n in modes]
            if args.temporary_server:
                plan.append(("temporary", 1))
            for tool, at_once in plan:
                missing = _missing(tool)
                if missing:
                    results.append(Result(tool, at_once, available=False, note=missing))
                    continue
                if tool == "temporary":
                    result = bench.scalix_migrate_run(1, temporary_server=True)
                else:
                    result = runners[tool](at_once)
                result.msg_s, result.mb_s = n_msgs / result.wall_s, mbytes / result.wall_s
                results.append(result)
                print(
                    f"{result.tool} x{at_once}: {result.wall_s:.1f} s, rerun "
                    f"{result.rerun_s:.2f} s, fidelity {result.fidelity}",
                    flush=True,
                )
            if not args.no_delta and bench.deltas:
                added, flagged = change_source(bed, users, args.seed)
                changed = snapshot(bed.imap_port, logins, bed.admin_password)
                print(f"delta: {added} new messages, {flagged} flags changed", flush=True)
                bench.run_deltas(changed)
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
            if args.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    total_s = time.perf_counter() - started
    notes = [
        f"{r.tool}, {r.at_once} at once, {name}: step seconds summed over users transfer "
        f"{st['transfer_s']}, verify {st['verify_s']}; staged {st['staged']}, appended "
        f"{st['appended']}, failed {st['failed']}, its own verify found "
        f"{st['verify_differences']} difference(s)"
        for r in results
        for name, st in r.steps.items()
    ] + [
        f"{r.tool}, {r.at_once} at once, from the Prefect API: {r.prefect}"
        for r in results
        if r.prefect
    ]
    text = table(results, n_msgs, mbytes) + "\n\n" + ratios(results) + "\n\n" + "\n\n".join(notes)
    print(text)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.platform()}",
        "load_avg_start": load_start,
        "load_avg_end": os.getloadavg(),
        "users": len(users),
        "messages": n_msgs,
        "megabytes": round(mbytes, 1),
        "seed": args.seed,
        "total_s": round(total_s, 1),
        "seed_s": round(seed_s, 1),
        "argv": sys.argv[1:],
        "versions": {
            "mbsync": _version(["mbsync", "--version"]),
            "imapsync": _version([*IMAPSYNC, "--version"]) if not _missing("imapsync") else "",
            "dovecot": _version(["dovecot", "--version"]),
            "python": platform.python_version(),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (args.out / f"compare_peers-{stamp}.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2)
    )
    md = (
        f"# compare_peers.py {' '.join(sys.argv[1:])}, {meta['date']}\n\n"
        f"{meta['users']} users, {n_msgs} messages, {meta['megabytes']} MB; machine "
        f"{meta['machine']}; load average {load_start[0]:.2f} at start, "
        f"{meta['load_avg_end'][0]:.2f} at end (other work shares the machine); whole run "
        f"{meta['total_s']} s; versions {meta['versions']}.\n\n{text}\n"
    )
    (args.out / f"compare_peers-{stamp}.md").write_text(md)
    (args.out / "latest.md").write_text(md)
    print(f"whole run {total_s:.1f} s; written to {args.out}")


def _missing(tool: str) -> str:
    """Why a peer cannot run here ('' when it can): shown in its row, never estimated."""
    if tool == "mbsync" and shutil.which("mbsync") is None:
        return "`mbsync` is not installed (Debian package isync; see bench/README.md)"
    if tool == "imapsync":
        if shutil.which("perl") is None or not IMAPSYNC_SCRIPT.is_file():
            return f"imapsync not found at {IMAPSYNC_SCRIPT} (set SXM_IMAPSYNC)"
        probe = subprocess.run([*IMAPSYNC, "--version"], capture_output=True, timeout=60)
        if probe.returncode != 0:
            return "imapsync's Perl modules are missing (bench/install-peers.sh)"
    return ""


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "sxm-worker":
        sxm_worker(*sys.argv[2:])
    else:
        main()
