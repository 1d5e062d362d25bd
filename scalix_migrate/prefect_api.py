"""Is the Prefect API there? One line for people when it is not.

Prefect, pointed at a stopped server, fails deep inside its client with a long traceback
("Failed to reach API at …"). The commands that need Prefect ask first, with a short explicit
timeout, and say what is unreachable and the two ways out. Like the CLI, an edge module.
"""

from __future__ import annotations

import httpx

HEALTH_TIMEOUT_S = 5.0
HOW_TO_GO_ON = (
    "start it (`prefect server start`), or go back to a temporary local server "
    "(`prefect config unset PREFECT_API_URL`)"
)


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect sees it (environment, profile); None: a temporary server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def api_problem(url: str, *, api_key: str | None = None) -> str | None:
    """None when ``url``/health answers; else one line: what is unreachable and what to do."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(url.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S, headers=headers)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        return f"Prefect API {url} (PREFECT_API_URL) is unreachable ({reason}): {HOW_TO_GO_ON}"
    if resp.status_code != 200:
        return (
            f"Prefect API {url} (PREFECT_API_URL) answered HTTP {resp.status_code} to /health: "
            f"{HOW_TO_GO_ON}"
        )
    return None


def prefect_api_problem() -> str | None:
    """The problem with the configured Prefect API, if any (none without PREFECT_API_URL)."""
    from prefect.settings import get_current_settings

    url = configured_api_url()
    if url is None:
        return None
    key = get_current_settings().api.key
    return api_problem(url, api_key=key.get_secret_value() if key else None)
