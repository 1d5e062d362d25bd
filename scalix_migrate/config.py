"""Tenant configuration: one YAML file per tenant, read once into typed, frozen models.

``load_config(path)`` is the only entry point. Every problem is reported at once, one line each,
as ``<file>:<line> <dotted.field>: <what was expected>, got <what was found>``, in a
:class:`ConfigError` (the CLI prints the lines and exits 2). Unknown keys are refused with a
"did you mean" hint. Secret fields hold :class:`SecretRef` references; a literal secret is refused
unless ``allow_inline_secrets: true``. Relative paths are relative to the current directory.
"""

from __future__ import annotations

import difflib
import re
import string
import typing
import zoneinfo
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from scalix_migrate.codes import PREFLIGHT_CODES
from scalix_migrate.errors import ConfigError
from scalix_migrate.secrets import KNOWN_SCHEMES, SecretRef


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


Port = Annotated[
    int, Field(ge=1, le=65535, json_schema_extra={"expected": "an integer from 1 to 65535"})
]
PositiveSeconds = Annotated[
    float, Field(gt=0, le=86400, json_schema_extra={"expected": "a number of seconds > 0"})
]


class TLSMode(StrEnum):
    implicit = "implicit"
    starttls = "starttls"
    none = "none"


class Phase(StrEnum):
    """A run's phase: full copies everything, delta what is new since and changed flags."""

    # The one definition for config, CLI, flow, tasks and steps. A StrEnum: the flow parameter
    # takes "full"/"delta" from deployments and the Prefect UI (the docstring is its help
    # there), and a phase prints and compares as its name.
    full = "full"
    delta = "delta"


#: What a per-user template (login_template, destination paths, token_command) may use.
USER_PLACEHOLDERS = ("email", "local_part", "domain", "auth_id", "display_name", "tenant")


def _check_placeholders(template: str) -> str:
    """Refuse an unknown ``{placeholder}`` (a typo) now, not at the first user's load."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"expected a template with balanced braces ({exc})") from None
    unknown = sorted({f for f in fields if f not in USER_PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + k + "}" for k in USER_PLACEHOLDERS)
        shown = ", ".join("{" + u + "}" for u in unknown)
        raise ValueError(f"placeholders among {known} only ({shown} is not one)")
    return template


_NAMED_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")


def _check_token_placeholders(template: str) -> str:
    """Refuse an unknown ``{name}`` in a token command or file: those are filled selectively
    (:class:`scalix_migrate.xoauth2.TokenSource`), so any other brace (JSON) is literal."""
    unknown = sorted(set(_NAMED_PLACEHOLDER.findall(template)) - set(USER_PLACEHOLDERS))
    if unknown:
        known = ", ".join("{" + k + "}" for k in USER_PLACEHOLDERS)
        shown = ", ".join("{" + u + "}" for u in unknown)
        raise ValueError(f"placeholders among {known} only ({shown} is not one)")
    return template


class SSHConfig(_Model):
    """How to reach the Scalix host's admin commands."""

    host: str | None = Field(None, description="defaults to source.server")
    port: Port = 22
    user: str = "root"
    key_file: Path | None = None
    password: SecretRef | None = None
    known_hosts: Path | None = Field(None, description="defaults to ~/.ssh/known_hosts")
    host_key_fingerprint: str | None = Field(
        None,
        pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$",
        json_schema_extra={"expected": "SHA256:<43 base64 characters>, as ssh-keygen -lf prints"},
    )
    sudo: bool = False
    bin_dir: str = "/opt/scalix/bin"
    omcurrent: str | None = None
    connect_timeout_s: PositiveSeconds = 15.0
    command_timeout_s: PositiveSeconds = 300.0
    reconnect_attempts: Annotated[int, Field(ge=0, le=10)] = Field(
        3, description="reconnects per batch of admin commands when the connection is lost"
    )
    commands: dict[str, str] = Field(
        default_factory=dict, description="overrides of admin command templates by name"
    )


class SourceIMAPConfig(_Model):
    host: str | None = Field(None, description="defaults to source.server")
    port: Port | None = Field(None, description="993 for implicit TLS, else 143")
    tls: TLSMode = TLSMode.implicit
    verify_certificate: bool = True
    ca_file: Path | None = None
    timeout_s: PositiveSeconds = 120.0
    login_identity: Literal["email", "auth_id", "display_name"] = "email"
    include_shared_folders: bool = False
    fetch_batch_messages: Annotated[int, Field(ge=1, le=10000)] = 200
    fetch_batch_bytes: Annotated[int, Field(ge=1 << 16)] = 16 << 20

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls is TLSMode.implicit else 143)


class SourceConfig(_Model):
    server: str = Field(description="the Scalix server's host name or address")
    server_names: list[str] = Field(min_length=1, description="Scalix server names (mailnodes)")
    admin_user: str
    admin_password: SecretRef
    test_user: str
    ssh: SSHConfig = SSHConfig()
    imap: SourceIMAPConfig = SourceIMAPConfig()

    @field_validator("server_names", mode="before")
    @classmethod
    def _split_names(cls, v: object) -> object:
        # Operators paste CloudM's comma-separated "Server Names" string.
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("test_user")
    @classmethod
    def _test_user_is_address(cls, v: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v):
            raise ValueError("expected the test user's full primary e-mail address")
        return v

    @property
    def ssh_host(self) -> str:
        return self.ssh.host or self.server

    @property
    def imap_host(self) -> str:
        return self.imap.host or self.server


class FolderRename(_Model):
    pattern: str
    replacement: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"expected a regular expression ({exc})") from None
        return v


DavPreset = Literal["generic", "nextcloud", "sogo", "google"]


class _DavConfig(_Model):
    """A CalDAV or CardDAV server: where each user's collections are created.

    ``url`` is the server (``generic``: the user's collection home itself, a template such as
    ``https://dav.example/{email}/``); the presets derive the home from it (see
    :func:`scalix_migrate.dav.home_url`). Google's endpoint takes no new collections: every folder
    goes into the user's default calendar or address book.
    """

    url: str = Field(description="server or home URL; placeholders as in login_template")
    preset: DavPreset = "generic"
    auth: Literal["password", "bearer"] = "password"
    login_template: str = Field(
        "{email}",
        description="placeholders: {email} {local_part} {domain} {auth_id} {display_name}",
    )
    password: SecretRef | None = None
    token_command: str | None = Field(
        None, description="prints an OAuth2 access token (auth: bearer); placeholders allowed"
    )
    token_file: str | None = None
    verify_certificate: bool = True
    ca_file: Path | None = None
    timeout_s: PositiveSeconds = 60.0
    max_resource_bytes: Annotated[int, Field(ge=1024)] | None = Field(
        None, description="refuse larger items before sending (the server's limit if it says)"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> _DavConfig:
        if self.preset == "google" and self.auth != "bearer":
            raise ValueError("preset: google needs auth: bearer (an OAuth2 token_command)")
        if self.auth == "password" and self.password is None:
            raise ValueError("auth: password needs a password reference")
        if self.auth == "bearer" and not (self.token_command or self.token_file):
            raise ValueError("auth: bearer needs token_command or token_file")
        return self


class CalDavConfig(_DavConfig):
    type: Literal["caldav"]


class CardDavConfig(_DavConfig):
    type: Literal["carddav"]


class GroupwareFilesConfig(_Model):
    """Today's files: one ``.ics``/``.vcf`` per item, in a directory per Scalix folder."""

    type: Literal["files"]
    path: str = Field(
        description="per-user directory; placeholders {tenant} {email} {local_part} {domain}"
    )


CalendarDestinationConfig = Annotated[
    CalDavConfig | GroupwareFilesConfig, Field(discriminator="type")
]
ContactsDestinationConfig = Annotated[
    CardDavConfig | GroupwareFilesConfig, Field(discriminator="type")
]


class _MailDestination(_Model):
    """What every mail destination may add: where calendars and address books go."""

    calendar: CalendarDestinationConfig | None = Field(
        None, description="appointments and tasks: caldav or files (optional)"
    )
    contacts: ContactsDestinationConfig | None = Field(
        None, description="contacts and distribution lists: carddav or files (optional)"
    )


class ImapDestinationConfig(_MailDestination):
    type: Literal["imap"]
    host: str
    port: Port | None = None
    tls: TLSMode = TLSMode.implicit
    verify_certificate: bool = True
    ca_file: Path | None = None
    timeout_s: PositiveSeconds = 120.0
    preset: Literal["generic", "dovecot", "gmail", "m365"] = "generic"
    auth: Literal["password", "xoauth2"] = "password"
    login_template: str = Field(
        "{email}",
        description="placeholders: {email} {local_part} {domain} {auth_id} {display_name}",
    )
    password: SecretRef | None = None
    token_command: str | None = Field(
        None, description="prints an OAuth2 access token; placeholders as in login_template"
    )
    token_file: str | None = None
    connections_per_user: Annotated[int, Field(ge=1, le=16)] = 2
    daily_byte_budget: Annotated[int, Field(ge=1)] | None = None

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls is TLSMode.implicit else 143)

    @field_validator("login_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        return _check_placeholders(v)

    @field_validator("token_command", "token_file")
    @classmethod
    def _token_placeholders(cls, v: str | None) -> str | None:
        return None if v is None else _check_token_placeholders(v)

    @model_validator(mode="after")
    def _credentials(self) -> ImapDestinationConfig:
        if self.auth == "password" and self.password is None:
            raise ValueError("auth: password needs destination.password")
        if self.auth == "xoauth2" and not (self.token_command or self.token_file):
            raise ValueError("auth: xoauth2 needs destination.token_command or token_file")
        return self


class MaildirDestinationConfig(_MailDestination):
    type: Literal["maildir"]
    path: str = Field(
        description="per-user directory; placeholders {tenant} {email} {local_part} {domain}"
    )

    _placeholders = field_validator("path")(lambda cls, v: _check_placeholders(v))


class MboxDestinationConfig(_MailDestination):
    type: Literal["mbox"]
    path: str = Field(description="per-user directory of mbox files, one per folder")

    _placeholders = field_validator("path")(lambda cls, v: _check_placeholders(v))


DestinationConfig = Annotated[
    ImapDestinationConfig | MaildirDestinationConfig | MboxDestinationConfig,
    Field(discriminator="type"),
]


class Selection(_Model):
    include: list[str] = Field(default_factory=list, description="names or fnmatch patterns")
    exclude: list[str] = Field(default_factory=list)


class FolderOptions(Selection):
    renames: list[FolderRename] = Field(default_factory=list)


def _calendar_date(value: object) -> object:
    """``YYYY-MM-DD`` text (as the YAML loader leaves it) or a date; nothing else is a date here.

    Pydantic's own date parsing would also take a Unix timestamp or a datetime string."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass  # 2024-13-45: the shape of a date, not a day of the calendar
    raise ValueError("expected a real calendar date YYYY-MM-DD")


#: A day of the calendar, written ``YYYY-MM-DD`` in the YAML; a ``datetime.date`` in the model.
CalendarDate = Annotated[
    date,
    BeforeValidator(_calendar_date),
    Field(json_schema_extra={"expected": "a calendar date YYYY-MM-DD"}),
]


class MessageOptions(_Model):
    since: CalendarDate | None = Field(None, description="only messages from this day on")
    before: CalendarDate | None = Field(None, description="only messages before this day")
    max_size_bytes: Annotated[int, Field(ge=1)] | None = None
    skip_deleted: bool = True

    @model_validator(mode="after")
    def _since_before_before(self) -> MessageOptions:
        if self.since is not None and self.before is not None and self.since >= self.before:
            raise ValueError(
                f"since ({self.since}) must be earlier than before ({self.before}): "
                "no message could be selected"
            )
        return self


DEFAULT_FLAG_MAP: dict[str, str | None] = {
    "\\X-Forwarded": "$Forwarded",
    "\\X-Has-Attach": None,
    "X-Scalix-Processed": None,
}


class FlagOptions(_Model):
    map: dict[str, str | None] = Field(
        default_factory=lambda: dict(DEFAULT_FLAG_MAP),
        description="source flag -> destination flag, null drops",
    )


class Concurrency(_Model):
    users: Annotated[int, Field(ge=1, le=64)] = 4
    connections_per_server: Annotated[int, Field(ge=1, le=500)] = 20
    connects_per_second: Annotated[float, Field(gt=0, le=10)] = 5.0


class RetryOptions(_Model):
    """How a step that failed with a transient fault (network, timeout, throttling) is rerun.

    The defaults give a user whose source cannot be read up to four attempts and 22 s of
    waiting in all, so it fails in well under a minute and the run moves on; a rerun of the
    failed users picks it up later. Each wait is logged."""

    attempts: Annotated[int, Field(ge=0, le=10)] = Field(
        3, description="retries of a step after a transient fault (0: none)"
    )
    delays_s: list[Annotated[float, Field(ge=0, le=3600)]] = Field(
        default_factory=lambda: [2.0, 5.0, 15.0],
        min_length=1,
        max_length=10,
        description="seconds to wait before each retry; the last value repeats",
        json_schema_extra={"expected": "a list of 1 to 10 waits in seconds, each 0 to 3600"},
    )


class StateOptions(_Model):
    dir: Path = Path(".scalix-migrate/state")
    url: str | None = Field(None, description="SQLAlchemy URL, e.g. postgresql+psycopg://…")


class Options(_Model):
    users: Selection = Selection()
    folders: FolderOptions = FolderOptions()
    messages: MessageOptions = MessageOptions()
    flags: FlagOptions = FlagOptions()
    concurrency: Concurrency = Concurrency()
    retries: RetryOptions = RetryOptions()
    staging_dir: Path = Path(".scalix-migrate/staging")
    reports_dir: Path = Path(".scalix-migrate/reports")
    state: StateOptions = StateOptions()
    dry_run: bool = False


class ServiceOptions(_Model):
    """restart-service: keep users out, restart Scalix, wait until healthy, let users back in."""

    restart: bool = False
    lockout: Literal["services", "accounts", "none"] = "services"
    restart_command: str = "service scalix restart"
    healthy_timeout_s: PositiveSeconds = 600.0
    restart_attempts: Annotated[int, Field(ge=1, le=5)] = 1
    commands: dict[str, str] = Field(default_factory=dict)


class DeploymentOptions(_Model):
    """How ``scalix-migrate deploy`` registers this tenant with Prefect."""

    work_pool: str = "scalix-migrate"
    concurrency_limit: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="runs of this tenant at once; >1 only for waves on several workers"
    )
    schedule_cron: str | None = Field(None, description="e.g. '0 2 * * *' for a nightly run")
    schedule_timezone: str = "UTC"

    @field_validator("schedule_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as UTC or Europe/Berlin") from None
        return v

    schedule_phase: Phase = Phase.delta


def _known_preflight_code(entry: str) -> str:
    if entry.split(":", 1)[0].strip().upper() not in PREFLIGHT_CODES:
        raise ValueError(
            "a preflight code listed by `scalix-migrate codes` (CODE, or CODE:user for one "
            "user, e.g. PF-ADM-002)"
        )
    return entry


class PreflightOptions(_Model):
    """Findings the operator has checked by hand and accepts for this tenant."""

    accept: list[Annotated[str, AfterValidator(_known_preflight_code)]] = Field(
        default_factory=list,
        description="preflight codes to accept (CODE, or CODE:user for one user), "
        "e.g. PF-ADM-002 after checking 'Is full administrator' in SAC",
    )


class TenantConfig(_Model):
    tenant: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        json_schema_extra={"expected": "lowercase letters, digits and dashes"},
    )
    allow_inline_secrets: bool = False
    source: SourceConfig
    destination: DestinationConfig
    options: Options = Options()
    service: ServiceOptions = ServiceOptions()
    preflight: PreflightOptions = PreflightOptions()
    deployment: DeploymentOptions = DeploymentOptions()

    @model_validator(mode="after")
    def _no_inline_secrets(self, info: ValidationInfo) -> TenantConfig:
        if info.context and info.context.get("defer_inline_check"):
            return self
        paths = inline_secret_paths(self)
        if paths and not self.allow_inline_secrets:
            raise ValueError(
                f"inline secrets at {', '.join(paths)}; use ${{ENV_VAR}}, file:/path "
                "or prefect-secret:NAME, or set allow_inline_secrets: true"
            )
        return self


def inline_secret_paths(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of every secret given as a literal value."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, SecretRef) and value.kind == "inline":
            found.append(path)
        elif isinstance(value, BaseModel):
            found.extend(inline_secret_paths(value, f"{path}."))
    return found


# Why an inline secret cannot go to Prefect, and the fix (deploy and run say it alike).
INLINE_REFUSED_BY_PREFECT = (
    "an inline secret cannot go to Prefect (deployment and flow-run parameters are stored in "
    "its database and shown in the UI); use file:/path (mode 0600), ${ENV_VAR} or "
    "prefect-secret:NAME"
)


def inline_secret_problems(path: Path, cfg: TenantConfig, *, why: str) -> list[str]:
    """One ``file:line field: why`` line per secret that ``cfg`` (read from ``path``) inlines."""
    dotted = inline_secret_paths(cfg)
    if not dotted:
        return []
    try:
        lines = _line_map(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        lines = {}
    return [f"{path}:{lines.get(tuple(d.split('.')), 1)} {d}: {why}" for d in dotted]


# --- loading with file/line in every error ------------------------------------------------


def load_config(path: str | Path) -> TenantConfig:
    """Read and validate one tenant file; raise ConfigError with one line per problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from None
    return parse_config(text, str(path))


def parse_config(text: str, filename: str = "<config>") -> TenantConfig:
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{filename}{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:1: expected a mapping of tenant settings at the top level")
    lines = _line_map(root)
    problems: list[str] = []
    try:
        cfg = TenantConfig.model_validate(data, context={"defer_inline_check": True})
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(_format_error(filename, lines, err))
        raise ConfigError(problems[0], problems=problems) from None
    if not cfg.allow_inline_secrets:
        for dotted in inline_secret_paths(cfg):
            where = lines.get(tuple(dotted.split(".")), 1)
            problems.append(f"{filename}:{where} {dotted}: {_inline_problem(cfg, dotted)}")
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return cfg


def _inline_problem(cfg: TenantConfig, dotted: str) -> str:
    """Why the inline secret at ``dotted`` is refused; the value itself is never shown."""
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    if isinstance(value, SecretRef) and value.unknown_scheme:
        return (
            f"expected a secret reference with a known scheme ({KNOWN_SCHEMES}), got a "
            "'scheme:' prefix that is none of them; fix the scheme's spelling"
        )
    return (
        f"expected a secret reference ({KNOWN_SCHEMES}), got an inline secret; move it out "
        "of the file or set allow_inline_secrets: true"
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as the text written: ``since: 2024-01-01`` is validated by
    the model like a quoted one, and ``2023-02-30`` gets a file:line error instead of
    PyYAML's bare ValueError."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line_map(node: yaml.Node | None, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path to the 1-based line where its value (or key) stands."""
    lines: dict[tuple[str, ...], int] = {}
    if node is None:
        return lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            for sub, line in _line_map(value_node, key).items():
                lines.setdefault(sub, line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            for sub, line in _line_map(item, (*path, str(i))).items():
                lines.setdefault(sub, line)
    return lines


_TAGS = {"imap", "maildir", "mbox"}
_GROUPWARE_TAGS = {
    "calendar": {"caldav": CalDavConfig, "files": GroupwareFilesConfig},
    "contacts": {"carddav": CardDavConfig, "files": GroupwareFilesConfig},
}
_SECRET_FIELDS = {"password", "admin_password"}


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    # Pydantic puts the discriminator's tag into the location: destination.imap.port,
    # destination.imap.calendar.caldav.url.
    out = [str(p) for p in loc]
    if len(out) >= 2 and out[0] == "destination" and out[1] in _TAGS:
        del out[1]
    if len(out) >= 3 and out[0] == "destination" and out[2] in _GROUPWARE_TAGS.get(out[1], {}):
        del out[2]
    return tuple(out)


def _groupware_tag(raw_loc: tuple[int | str, ...]) -> str | None:
    """The tag of destination.<type>.calendar|contacts.<tag> in a raw error location."""
    if len(raw_loc) > 3 and raw_loc[0] == "destination" and raw_loc[2] in _GROUPWARE_TAGS:
        return str(raw_loc[3])
    return None


def _field_info(
    loc: tuple[str, ...], tag: str | None, groupware_tag: str | None = None
) -> FieldInfo | None:
    model: Any = TenantConfig
    info: FieldInfo | None = None
    for depth, part in enumerate(loc):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        info = fields[part]
        ann = info.annotation
        if part == "destination":
            model = {
                "imap": ImapDestinationConfig,
                "maildir": MaildirDestinationConfig,
                "mbox": MboxDestinationConfig,
            }.get(tag or "")
        elif depth == 1 and loc[0] == "destination" and part in _GROUPWARE_TAGS:
            model = _GROUPWARE_TAGS[part].get(groupware_tag or "")
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            model = None
    return info


def _expected(info: FieldInfo | None) -> str | None:
    if info is None:
        return None
    # Optional[Annotated[int, Field(...)]] keeps the inner Field in the union's arguments.
    nested = [m for a in typing.get_args(info.annotation) for m in getattr(a, "__metadata__", ())]
    for source in [
        info.json_schema_extra,
        *[getattr(m, "json_schema_extra", None) for m in [*info.metadata, *nested]],
    ]:
        if isinstance(source, dict) and "expected" in source:
            return str(source["expected"])
    return None


def _nearest_line(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _format_error(filename: str, lines: dict[tuple[str, ...], int], err: Any) -> str:
    raw_loc = tuple(err["loc"])
    tag = str(raw_loc[1]) if len(raw_loc) > 1 and raw_loc[0] == "destination" else None
    gw_tag = _groupware_tag(raw_loc)
    loc = _clean_loc(raw_loc)
    dotted = ".".join(loc) or "(top level)"
    line = _nearest_line(lines, loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _field_info(loc[:-1], tag, gw_tag)
        parent_model = parent.annotation if parent is not None else TenantConfig
        known = list(getattr(parent_model, "model_fields", {}) or {})
        if not loc[:-1]:
            known = list(TenantConfig.model_fields)
        elif loc[:-1] in {("destination", "calendar"), ("destination", "contacts")}:
            known = list(getattr(_GROUPWARE_TAGS[loc[1]].get(gw_tag or ""), "model_fields", {}))
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"known keys: {', '.join(known)}"
        return f"{filename}:{line} {dotted}: unknown key; {fix}"
    if kind == "missing":
        return f"{filename}:{line} {dotted}: required field is missing; add '{loc[-1]}:'"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        found = (err.get("ctx") or {}).get("tag")
        line = _nearest_line(lines, (*loc, "type"))
        shown = repr(found) if found is not None else "nothing"
        tags = ", ".join(_GROUPWARE_TAGS.get(loc[-1], {"imap": 0, "maildir": 0, "mbox": 0}))
        return f"{filename}:{line} {dotted}.type: expected one of {tags}, got {shown}"
    if kind == "value_error" and isinstance(err.get("input"), dict):
        # A check across fields of one section: the message says it all.
        return f"{filename}:{line} {dotted}: {_describe(err)}"
    expected = _expected(_field_info(loc, tag, gw_tag)) or _describe(err)
    return f"{filename}:{line} {dotted}: expected {expected}, got {_shown(err.get('input'), loc)}"


def _describe(err: Any) -> str:
    msg = str(err["msg"])
    msg = re.sub(r"^(Value error, |Input should be )(expected )?", "", msg)
    return msg[0].lower() + msg[1:] if msg else "a valid value"


def _shown(value: object, loc: tuple[str, ...]) -> str:
    if loc and loc[-1] in _SECRET_FIELDS:
        return "a value (not shown: secret field)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"
