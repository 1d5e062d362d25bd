"""One user of one tenant: every form of the user's identity, and the one way to its peers.

A :class:`UserContext` is built once per user from the tenant config and the discovered
:class:`~scalix_migrate.records.ScalixUser`. Preflight, extract, load, verify, transfer,
groupware and the demo all name the user and open its mailboxes through it, so the login
preflight probes is the login extract uses, and a template gives the same value everywhere.

Identity forms:

* ``key``: the user's key in the journal and in ``users=[…]`` (:attr:`ScalixUser.key`);
* ``source_login``: ``mboxadmin:<admin>:<target>``, the target chosen by
  ``source.imap.login_identity`` (``email``, ``auth_id`` or ``display_name``) and, where this
  user has no such value, the primary address, then the display name (always known);
* ``placeholders``: the values of ``{email} {local_part} {domain} {auth_id} {display_name}
  {tenant}`` for every per-user template (``login_template``, paths, DAV urls, token commands);
  ``{email}`` is the primary address, else the user's key;
* ``destination_login``: ``destination.login_template`` filled (IMAP destinations; else None).

Openers (none enters what it returns): :meth:`UserContext.open_source` (the Scalix mailbox),
:meth:`UserContext.open_destination` (the sink ``destination.type`` names),
:meth:`UserContext.tokens` (an OAuth2 token source) and :meth:`UserContext.journal` (the
process's journal). :func:`open_source` and :func:`open_destination` are the same as factories
of ``(cfg, user)``: the seams steps take for tests that wrap the real adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from scalix_migrate.config import ImapDestinationConfig, TenantConfig
from scalix_migrate.destinations.base import Destination
from scalix_migrate.destinations.imap import ImapDestination
from scalix_migrate.destinations.maildir import MaildirDestination
from scalix_migrate.destinations.mbox import MboxDestination
from scalix_migrate.errors import ConfigError
from scalix_migrate.records import ScalixUser
from scalix_migrate.scalix.imap_source import ScalixMailbox
from scalix_migrate.state import Journal
from scalix_migrate.xoauth2 import TokenSource


@dataclass(frozen=True)
class UserContext:
    """One user's identity forms and openers (see the module docstring)."""

    cfg: TenantConfig
    user: ScalixUser
    key: str
    source_login: str
    placeholders: Mapping[str, str]
    destination_login: str | None

    @classmethod
    def of(cls, cfg: TenantConfig, user: ScalixUser) -> UserContext:
        values = MappingProxyType(_placeholders(cfg, user))
        dest = cfg.destination
        return cls(
            cfg=cfg,
            user=user,
            key=user.key,
            source_login=f"mboxadmin:{cfg.source.admin_user}:{_source_target(cfg, user)}",
            placeholders=values,
            destination_login=(
                _fill(dest.login_template, values)
                if isinstance(dest, ImapDestinationConfig)
                else None
            ),
        )

    def render(self, template: str) -> str:
        """Fill a per-user template; an unknown placeholder is a config error."""
        return _fill(template, self.placeholders)

    def tokens(self, *, command: str | None, file: str | None) -> TokenSource:
        """The OAuth2 token source of ``command`` or ``file``, filled for this user."""
        return TokenSource(
            command=command, file=file, placeholders=dict(self.placeholders), user=self.key
        )

    def open_source(self) -> ScalixMailbox:
        """The user's Scalix mailbox (read-only, over the mboxadmin login), not yet entered."""
        return ScalixMailbox(self.cfg, self.user, login=self.source_login)

    def open_destination(self) -> Destination:
        """The sink ``destination.type`` names, for this user, not yet entered."""
        dest = self.cfg.destination
        if isinstance(dest, ImapDestinationConfig):
            assert self.destination_login is not None
            tokens = (
                self.tokens(command=dest.token_command, file=dest.token_file)
                if dest.auth == "xoauth2"
                else None
            )
            imap: Destination = ImapDestination(
                dest, login=self.destination_login, tokens=tokens, user=self.key
            )
            return imap
        if dest.type == "maildir":
            return MaildirDestination(Path(self.render(dest.path)), user=self.key)
        return MboxDestination(Path(self.render(dest.path)), user=self.key)

    def journal(self) -> Journal:
        """The tenant's journal, shared by every step of this process (not to be closed)."""
        state = self.cfg.options.state
        return Journal.shared(url=state.url, directory=state.dir)


def open_source(cfg: TenantConfig, user: ScalixUser) -> ScalixMailbox:
    """``UserContext.of(cfg, user).open_source()``: the default mailbox factory."""
    return UserContext.of(cfg, user).open_source()


def open_destination(cfg: TenantConfig, user: ScalixUser) -> Destination:
    """``UserContext.of(cfg, user).open_destination()``: the default destination factory."""
    return UserContext.of(cfg, user).open_destination()


def _source_target(cfg: TenantConfig, user: ScalixUser) -> str:
    chosen = {
        "email": user.primary_address,
        "auth_id": user.auth_id,
        "display_name": user.display_name,
    }[cfg.source.imap.login_identity]
    return chosen or user.primary_address or user.display_name


def _placeholders(cfg: TenantConfig, user: ScalixUser) -> dict[str, str]:
    email = user.primary_address or user.key
    local, _, domain = email.partition("@")
    return {
        "email": email,
        "local_part": local,
        "domain": domain,
        "auth_id": user.auth_id or local,
        "display_name": user.display_name,
        "tenant": cfg.tenant,
    }


def _fill(template: str, values: Mapping[str, str]) -> str:
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r} uses an unknown placeholder ({exc}); "
            f"known: {', '.join('{' + k + '}' for k in values)}"
        ) from None
