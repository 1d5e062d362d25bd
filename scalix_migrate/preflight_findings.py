"""A preflight finding: one result of a check.

A :class:`Finding` carries a code of :data:`scalix_migrate.codes.PREFLIGHT_CODES`, its severity
(``blocking``: nothing may move; ``exclude-user``: this user is left out of the run;
``warning``), the user it concerns, a message and the remedy the operator can apply. The
checks live in :mod:`scalix_migrate.preflight` (source, admin, users),
:mod:`scalix_migrate.preflight_destination` and :mod:`scalix_migrate.preflight_groupware`;
they all build findings with :func:`finding`. This module sits below all three, so none of
them imports another for the record.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalix_migrate.codes import PREFLIGHT_CODES, Severity


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    user: str | None
    message: str
    remedy: str
    accepted: bool = False  # by preflight.accept: kept and shown, but blocks/excludes nothing

    @property
    def counts(self) -> bool:
        """Whether the finding has its severity's effect (it is not accepted)."""
        return not self.accepted

    def __post_init__(self) -> None:
        if self.code not in PREFLIGHT_CODES:
            raise ValueError(f"unknown preflight code {self.code!r}: not in codes.PREFLIGHT_CODES")


def finding(
    code: str, message: str, *, user: str | None = None, remedy: str | None = None
) -> Finding:
    spec = PREFLIGHT_CODES.get(code)
    if spec is None:
        raise ValueError(f"unknown preflight code {code!r}: not in codes.PREFLIGHT_CODES")
    return Finding(code, spec.severity, user, message, remedy or spec.remedy)
