"""Tenant config: typed models, and errors that name file, line, field and fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from scalix_migrate.config import TenantConfig, TLSMode, load_config, parse_config
from scalix_migrate.errors import ConfigError
from scalix_migrate.secrets import SecretRef

GOOD = """\
tenant: acme
source:
  server: scalix.acme.test
  server_names: mail1, mail2
  admin_user: sxadmin
  admin_password: ${SXM_TEST_ADMIN_PW}
  test_user: kim@acme.test
  imap:
    port: 1993
destination:
  type: maildir
  path: out/{email}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acme.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "configs/acme.yaml")
    return info.value.problems


def test_good_config_is_typed() -> None:
    cfg = parse_config(GOOD, "configs/acme.yaml")
    assert cfg.source.server_names == ["mail1", "mail2"]
    assert cfg.source.imap.tls is TLSMode.implicit
    assert cfg.source.imap.effective_port == 1993
    assert cfg.source.ssh_host == "scalix.acme.test"
    assert cfg.source.admin_password == SecretRef("env", "SXM_TEST_ADMIN_PW")
    assert cfg.destination.type == "maildir"


def test_example_config_documents_a_valid_tenant() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "example.yaml")
    assert cfg.tenant == "acme"


def test_wrong_type_names_file_line_field_expected_and_found() -> None:
    problems = _problems(GOOD.replace("port: 1993", "port: 99999x"))
    assert problems == [
        "configs/acme.yaml:9 source.imap.port: expected an integer from 1 to 65535, got '99999x'"
    ]


def test_out_of_range_port() -> None:
    problems = _problems(GOOD.replace("port: 1993", "port: 70000"))
    assert problems == [
        "configs/acme.yaml:9 source.imap.port: expected an integer from 1 to 65535, got 70000"
    ]


def test_missing_field() -> None:
    problems = _problems(GOOD.replace("  admin_user: sxadmin\n", ""))
    assert problems == [
        "configs/acme.yaml:2 source.admin_user: required field is missing; add 'admin_user:'"
    ]


def test_unknown_key_suggests_the_right_one() -> None:
    problems = _problems(GOOD.replace("  imap:\n", "  imap:\n    prot: 1\n"))
    assert problems == ["configs/acme.yaml:9 source.imap.prot: unknown key; did you mean 'port'?"]


def test_every_problem_reported_at_once() -> None:
    text = GOOD.replace("port: 1993", "port: x").replace("tenant: acme", "tenant: Acme_Corp")
    problems = _problems(text)
    assert len(problems) == 2
    assert problems[0].startswith("configs/acme.yaml:1 tenant: expected lowercase letters")
    assert problems[1].startswith("configs/acme.yaml:9 source.imap.port:")


def test_bad_yaml_syntax_names_the_line() -> None:
    problems = _problems(GOOD.replace("  admin_user: sxadmin", "  admin_user: [sxadmin"))
    assert len(problems) == 1
    assert problems[0].startswith("configs/acme.yaml:")
    assert "YAML syntax error" in problems[0]


def test_inline_password_refused_and_never_echoed() -> None:
    problems = _problems(GOOD.replace("${SXM_TEST_ADMIN_PW}", "hunter2-secret"))
    assert problems == [
        "configs/acme.yaml:6 source.admin_password: expected a secret reference (${ENV_VAR}, "
        "file:/path or prefect-secret:NAME), got an inline secret; move it out of the file or "
        "set allow_inline_secrets: true"
    ]
    assert not any("hunter2" in p for p in problems)


def test_inline_password_allowed_when_opted_in() -> None:
    cfg = parse_config(
        "allow_inline_secrets: true\n" + GOOD.replace("${SXM_TEST_ADMIN_PW}", "hunter2-secret")
    )
    assert cfg.source.admin_password.resolve() == "hunter2-secret"
    assert "hunter2" not in repr(cfg)
    assert "hunter2" not in str(cfg.source.admin_password)


def test_misspelt_secret_key_does_not_echo_the_value() -> None:
    problems = _problems(GOOD.replace("admin_password:", "admin_pasword:"))
    assert any(
        "source.admin_pasword: unknown key; did you mean 'admin_password'?" in p for p in problems
    )
    assert not any("SXM_TEST_ADMIN_PW" in p for p in problems)


def test_wrong_destination_type() -> None:
    problems = _problems(GOOD.replace("type: maildir", "type: exchange"))
    assert problems == [
        "configs/acme.yaml:11 destination.type: expected one of imap, maildir, mbox, got 'exchange'"
    ]


def test_secret_references_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SXM_TEST_ADMIN_PW", "from-env")
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n", encoding="utf-8")
    assert SecretRef.parse("${SXM_TEST_ADMIN_PW}").resolve() == "from-env"
    assert SecretRef.parse(f"file:{secret_file}").resolve() == "from-file"
    monkeypatch.delenv("SXM_TEST_ADMIN_PW")
    with pytest.raises(ConfigError, match="SXM_TEST_ADMIN_PW is not set"):
        SecretRef.parse("${SXM_TEST_ADMIN_PW}").resolve()


def test_serialised_config_keeps_references_not_values() -> None:
    cfg = parse_config(GOOD)
    dumped = cfg.model_dump(mode="json")
    assert dumped["source"]["admin_password"] == "${SXM_TEST_ADMIN_PW}"
    again = type(cfg).model_validate(dumped)
    assert again == cfg


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t.replace("  admin_user: sxadmin\n", ""), "source.admin_user: required field"),
        (
            lambda t: t.replace("port: 1993", "port: 99999x"),
            "source.imap.port: expected an integer",
        ),
        (lambda t: t + "colour: blue\n", "colour: unknown key"),
        (lambda t: t.replace("tenant: acme", "tenant: [acme"), "YAML syntax error"),
        (lambda t: t.replace("${SXM_TEST_ADMIN_PW}", "hunter2"), "got an inline secret"),
    ],
)
def test_cli_validate_exits_2_with_the_error(tmp_path: Path, edit, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, edit(GOOD))
    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr
    assert str(path) in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_cli_validate_ok(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    proc = subprocess.run(
        [sys.executable, "-m", "scalix_migrate.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def _with_options(extra: str) -> str:
    return GOOD + extra


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'options:\n  messages:\n    since: "2024-13-45"\n',
            "configs/acme.yaml:15 options.messages.since: expected a calendar date YYYY-MM-DD, "
            "got '2024-13-45'",
        ),
        (
            "options:\n  messages:\n    before: 2023-02-30\n",
            "configs/acme.yaml:15 options.messages.before: expected a calendar date YYYY-MM-DD, "
            "got '2023-02-30'",
        ),
        (
            'options:\n  messages:\n    since: "2024-05-01"\n    before: "2024-01-01"\n',
            "configs/acme.yaml:14 options.messages: since (2024-05-01) must be earlier than "
            "before (2024-01-01): no message could be selected",
        ),
        (
            "deployment:\n  schedule_timezone: Mars/Olympus\n",
            "configs/acme.yaml:14 deployment.schedule_timezone: expected an IANA time zone such "
            "as UTC or Europe/Berlin, got 'Mars/Olympus'",
        ),
        (
            "options:\n  retries:\n    delays_s: []\n",
            "configs/acme.yaml:15 options.retries.delays_s: expected a list of 1 to 10 waits in "
            "seconds, each 0 to 3600, got a list",
        ),
    ],
)
def test_values_are_checked_for_meaning_not_only_shape(extra: str, expected: str) -> None:
    assert _problems(_with_options(extra)) == [expected]


@pytest.mark.parametrize("written", ["2024-01-31", '"2024-01-31"'])
def test_since_and_before_are_dates_quoted_or_not(written: str) -> None:
    text = GOOD + f"options:\n  messages:\n    since: {written}\n    before: 2024-03-01\n"
    messages = parse_config(text, "x.yaml").options.messages
    assert messages.since == date(2024, 1, 31)
    assert messages.before == date(2024, 3, 1)
    assert type(messages.since) is date


def test_dates_survive_the_prefect_parameter_round_trip() -> None:
    # Deployments store the config as JSON; the flow run validates it back.
    cfg = parse_config(GOOD + "options:\n  messages:\n    since: 2024-01-31\n", "x.yaml")
    dumped = cfg.model_dump(mode="json")
    assert dumped["options"]["messages"]["since"] == "2024-01-31"
    assert TenantConfig.model_validate(dumped).options.messages.since == date(2024, 1, 31)


@pytest.mark.parametrize("written", ["1706659200", "2024-01-31T00:00:00", "31.01.2024"])
def test_only_a_calendar_date_is_a_date(written: str) -> None:
    # Pydantic alone would read a Unix timestamp or a midnight datetime as a date.
    (problem,) = _problems(GOOD + f"options:\n  messages:\n    since: {written}\n")
    assert problem.startswith(
        "configs/acme.yaml:15 options.messages.since: expected a calendar date YYYY-MM-DD, got "
    )


def test_an_unknown_placeholder_is_refused_at_validate_time() -> None:
    (problem,) = _problems(GOOD.replace("path: out/{email}", "path: out/{emial}"))
    assert problem.startswith("configs/acme.yaml:12 destination.path: expected placeholders")
    assert "{emial} is not one" in problem


@pytest.mark.parametrize("value", ["vault:acme/admin", "prefect-secrets:acme-admin"])
def test_an_unknown_secret_scheme_names_the_field_and_the_known_schemes(value: str) -> None:
    problems = _problems(GOOD.replace("${SXM_TEST_ADMIN_PW}", value))
    assert problems == [
        "configs/acme.yaml:6 source.admin_password: expected a secret reference with a known "
        "scheme (${ENV_VAR}, file:/path or prefect-secret:NAME), got a 'scheme:' prefix that "
        "is none of them; fix the scheme's spelling"
    ]
    assert not any(value in p for p in problems)  # the value may be a password after all


def test_every_secret_scheme_has_a_resolver_without_registration() -> None:
    import typing

    from scalix_migrate.secrets import RESOLVERS, SecretKind

    assert set(RESOLVERS) == set(typing.get_args(SecretKind))


def test_the_config_resolves_secrets_without_importing_prefect() -> None:
    # Prefect is imported by the prefect-secret: resolver when it is used, never before.
    code = (
        "import sys, os; os.environ['SXM_T'] = 'x'; "
        "import scalix_migrate.config, scalix_migrate.secrets as s; "
        "assert s.SecretRef.parse('${SXM_T}').resolve() == 'x'; "
        "print(sorted(m for m in ('prefect', 'tasks') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "[]"
