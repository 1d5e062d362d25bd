"""Secrets are references in the config, resolved only where they are used.

A config value such as ``${SCALIX_ADMIN_PASSWORD}``, ``file:/run/secrets/scalix`` or
``prefect-secret:acme-scalix-admin`` is kept as that reference everywhere (the YAML, Prefect
parameters, logs, reports, reprs) and turned into the secret by :meth:`SecretRef.resolve` at the
moment a connection needs it. A literal is accepted only when the tenant sets
``allow_inline_secrets: true`` (the sandbox does); it is never printed either.

Every scheme is served here, by :data:`RESOLVERS`, whoever resolves the reference (a Prefect
task, ``scalix-migrate preflight``, ``unlock``): nothing has to be registered or imported first.
The core does not import Prefect at import time: ``prefect-secret:`` imports it inside its
resolver, the first time such a reference is resolved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from scalix_migrate.errors import ConfigError
from scalix_migrate.private import private_prefect_home

SecretKind = Literal["env", "file", "prefect-secret", "inline"]

_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
# A value that starts like ``scheme:`` (``vault:x``, ``prefect-secrets:x``) but names no known
# scheme: a typo or an unsupported store. Where inline secrets are refused, the config names it
# as such instead of "an inline secret"; where they are allowed, it is a literal like any other.
_SCHEME_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S")
KNOWN_SCHEMES = "${ENV_VAR}, file:/path or prefect-secret:NAME"


def _from_env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"environment variable {name} is not set", code="SXM-CFG-002")
    return value


def _from_file(name: str) -> str:
    path = Path(name).expanduser()
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"secret file {path} cannot be read ({exc.strerror})", code="SXM-CFG-002"
        ) from None


def _from_prefect_secret(name: str) -> str:
    """The value of the Prefect Secret block ``name``, from the configured Prefect API."""
    # Imported here: the core must not import Prefect unless a reference needs it.
    from prefect.blocks.system import Secret

    private_prefect_home()  # a local Prefect keeps its database there: 0700 before first use
    try:
        block: Secret[str] = Secret.load(name)  # type: ignore[assignment]  # sync in sync context
    except ValueError:  # Prefect's "Unable to find block document named …"
        raise ConfigError(
            f"Prefect Secret block {name} not found (prefect-secret:{name})", code="SXM-CFG-002"
        ) from None
    return str(block.get())


#: The resolver of each scheme: ``RESOLVERS[kind](ref)`` is the secret (or a ConfigError).
RESOLVERS: dict[SecretKind, Callable[[str], str]] = {
    "env": _from_env,
    "file": _from_file,
    "prefect-secret": _from_prefect_secret,
    "inline": lambda value: value,  # only ever allowed by allow_inline_secrets
}


@dataclass(frozen=True, repr=False)
class SecretRef:
    """A reference to a secret; ``str()``/``repr()`` show the reference, never the value."""

    kind: SecretKind
    ref: str

    @classmethod
    def parse(cls, value: object) -> SecretRef:
        if isinstance(value, SecretRef):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a secret reference such as {KNOWN_SCHEMES}")
        if m := _ENV.match(value):
            return cls("env", m.group(1))
        if value.startswith("file:"):
            return cls("file", value.removeprefix("file:"))
        if value.startswith("prefect-secret:"):
            return cls("prefect-secret", value.removeprefix("prefect-secret:"))
        return cls("inline", value)

    @property
    def reference(self) -> str:
        """The text that stands for the secret in configs and parameters."""
        match self.kind:
            case "env":
                return "${" + self.ref + "}"
            case "file":
                return f"file:{self.ref}"
            case "prefect-secret":
                return f"prefect-secret:{self.ref}"
            case _:
                return self.ref  # inline: only ever allowed by allow_inline_secrets

    def resolve(self) -> str:
        """Return the secret's value, or raise ConfigError saying which reference failed."""
        return RESOLVERS[self.kind](self.ref)

    @property
    def unknown_scheme(self) -> bool:
        """An inline value shaped like ``scheme:…`` with a scheme we do not know (a typo)."""
        return self.kind == "inline" and _SCHEME_LIKE.match(self.ref) is not None

    def __repr__(self) -> str:
        return f"SecretRef({self.kind}:{'***' if self.kind == 'inline' else self.ref})"

    __str__ = __repr__

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.reference, when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "description": KNOWN_SCHEMES}
