"""Secrets are references in the config, resolved only where they are used.

A config value such as ``${SCALIX_ADMIN_PASSWORD}``, ``file:/run/secrets/scalix`` or
``prefect-secret:acme-scalix-admin`` is kept as that reference everywhere (the YAML, Prefect
parameters, logs, reports, reprs) and turned into the secret by :meth:`SecretRef.resolve` at the
moment a connection needs it. A literal is accepted only when the tenant sets
``allow_inline_secrets: true`` (the sandbox does); it is never printed either.

The core does not import Prefect: the ``prefect-secret:`` scheme is served by a resolver that
the Prefect task layer registers with :func:`register_resolver`.
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

SecretKind = Literal["env", "file", "prefect-secret", "inline"]

_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_resolvers: dict[str, Callable[[str], str]] = {}


def register_resolver(scheme: str, resolver: Callable[[str], str]) -> None:
    """Serve references ``<scheme>:<name>`` with ``resolver(name)`` (e.g. Prefect Secret blocks)."""
    _resolvers[scheme] = resolver


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
            raise ValueError(
                "expected a secret reference such as ${ENV_VAR}, file:/path or prefect-secret:NAME"
            )
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
        match self.kind:
            case "inline":
                return self.ref
            case "env":
                value = os.environ.get(self.ref)
                if value is None:
                    raise ConfigError(
                        f"environment variable {self.ref} is not set", code="SXM-CFG-002"
                    )
                return value
            case "file":
                path = Path(self.ref).expanduser()
                try:
                    return path.read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ConfigError(
                        f"secret file {path} cannot be read ({exc.strerror})", code="SXM-CFG-002"
                    ) from None
            case _:
                resolver = _resolvers.get(self.kind)
                if resolver is None:
                    raise ConfigError(
                        f"no resolver for {self.kind}:{self.ref} outside Prefect",
                        code="SXM-CFG-002",
                    )
                return resolver(self.ref)

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
        return {"type": "string", "description": "${ENV_VAR}, file:/path or prefect-secret:NAME"}
