"""No secret in a log line (at DEBUG, every library's logger), a report or an error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from scalix_migrate import steps
from scalix_migrate.config import load_config
from scalix_migrate.discovery import discover_users
from scalix_migrate.errors import MigrationError
from scalix_migrate.report import write_reports
from scalix_migrate.sandbox import Sandbox


def test_a_whole_user_migration_logs_no_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # paramiko, imapclient/imaplib, SQLAlchemy, ours
    with Sandbox(tmp_path / "sandbox") as sandbox:
        data = sandbox.config_data(
            {"type": "maildir", "path": str(tmp_path / "maildir" / "{email}")}, tenant="nosecret"
        )
        data["options"].update(
            staging_dir=str(tmp_path / "staging"),
            reports_dir=str(tmp_path / "reports"),
            state={"dir": str(tmp_path / "state")},
            users={"include": ["kim.lee@acme.test"]},
        )
        path = tmp_path / "tenant.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        cfg = load_config(path)
        secrets = [sandbox.admin_password, sandbox.ssh_password]

        discovery = discover_users(cfg)
        steps.preflight_step(cfg, discovery)
        (kim,) = discovery.users
        steps.extract_step(cfg, kim)
        steps.load_step(cfg, kim)
        steps.verify_step(cfg, kim)
        with steps.journal_for(cfg) as journal:
            write_reports(journal, cfg.tenant, cfg.options.reports_dir)

        # A wrong admin password: the error names the user and the fix, not the password.
        wrong = cfg.model_copy(
            update={
                "source": cfg.source.model_copy(
                    update={
                        "admin_password": type(cfg.source.admin_password).parse(
                            "not-the-password-xyz"
                        )
                    }
                )
            }
        )
        with pytest.raises(MigrationError) as refused:
            steps.extract_step(wrong, kim)

    assert "kim.lee@acme.test" in str(refused.value)
    assert "not-the-password-xyz" not in str(refused.value)
    # The stand-in servers' own loggers (pymap, the sandbox's SSH server) play the remote side
    # and see what the client sends, as a real server's log would; the client's must not.
    ours = [
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith(("pymap", "scalix_migrate.sandbox"))
    ]
    assert len(ours) > 50  # the client libraries did log at DEBUG
    client_log = "\n".join(ours)
    reports = "".join(p.read_text(encoding="utf-8") for p in cfg.options.reports_dir.iterdir())
    for secret in [*secrets, "not-the-password-xyz"]:
        assert secret not in client_log
        assert secret not in reports
