"""Where the services are, the operator token, and HTTP calls that fail with a sentence.

Addresses: `ESIMCTL_<SERVICE>_URL`, else `http://127.0.0.1:<SERVICE>_HTTP_PORT` with the local
run's ports (CONTRACT.md). The token: `OPERATOR_TOKEN`, else the file `ESIMCTL_TOKEN_FILE`
names, else `var/operator.token` (what `make run` writes) in this folder or one above it.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from esim_core.settings import LOCAL_TOKEN_FILE

SERVICES = ("accounts", "billing", "provisioning", "notifier")
LOCAL_PORTS = {"accounts": 8000, "billing": 8001, "provisioning": 8002, "notifier": 8003}


class CtlError(Exception):
    """Something esimctl cannot do; the message says what and what to check."""


class UnreachableError(CtlError):
    """A service (or Kafka) does not answer."""


class NotFoundError(CtlError):
    """The service does not know the thing asked for."""


class RefusedError(CtlError):
    """The service refused the action as the thing stands (HTTP 409)."""


def service_urls(env: Mapping[str, str]) -> dict[str, str]:
    """Each service's base URL, from the environment."""
    urls = {}
    for name in SERVICES:
        given = env.get(f"ESIMCTL_{name.upper()}_URL", "").strip()
        port = env.get(f"{name.upper()}_HTTP_PORT", "").strip() or str(LOCAL_PORTS[name])
        urls[name] = (given or f"http://127.0.0.1:{port}").rstrip("/")
    return urls


def find_token(env: Mapping[str, str], cwd: Path) -> str:
    """The operator token: `OPERATOR_TOKEN`, `ESIMCTL_TOKEN_FILE` or the local run's file.

    Raises:
        CtlError: none of them is there.
    """
    if env.get("OPERATOR_TOKEN", "").strip():
        return env["OPERATOR_TOKEN"].strip()
    named = env.get("ESIMCTL_TOKEN_FILE", "").strip()
    candidates = [Path(named)] if named else [d / LOCAL_TOKEN_FILE for d in (cwd, *cwd.parents)]
    for path in candidates:
        if path.is_file():
            token = path.read_text().strip()
            if token:
                return token
    where = named or f"{LOCAL_TOKEN_FILE} (in this folder or above)"
    raise CtlError(
        f"no operator token: set OPERATOR_TOKEN, or ESIMCTL_TOKEN_FILE, or run where `make run` "
        f"wrote {where}"
    )


def _problem_detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:300] or answer.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


@dataclass
class Operator:
    """Calls to the services' operator APIs with the operator token."""

    urls: dict[str, str]
    token: str = field(repr=False)
    timeout_s: float = 10.0
    transport: httpx.BaseTransport | None = None

    def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """The JSON answer of one call; None for a 404 when `missing_ok`.

        Raises:
            UnreachableError: the service does not answer.
            NotFoundError: a 404 (unless `missing_ok`).
            RefusedError: a 409.
            CtlError: the token was refused, or another error status.
        """
        base = self.urls[service]
        try:
            with httpx.Client(
                base_url=base,
                timeout=self.timeout_s,
                transport=self.transport,
                headers={"Authorization": f"Bearer {self.token}"},
            ) as http:
                answer = http.request(method, path, params=params)
        except httpx.TimeoutException:
            raise UnreachableError(
                f"{service} at {base} did not answer within {self.timeout_s:g} s"
            ) from None
        except httpx.TransportError as error:
            why = str(error) or "no connection"
            raise UnreachableError(
                f"{service} is not reachable at {base} ({type(error).__name__}: {why}); is it "
                f"running? (make run, or set ESIMCTL_{service.upper()}_URL)"
            ) from None
        if answer.status_code == 404 and missing_ok:
            return None
        detail = _problem_detail(answer)
        if answer.status_code == 401:
            raise CtlError(
                f"{service} refused the operator token ({detail}); check OPERATOR_TOKEN or "
                f"{LOCAL_TOKEN_FILE}"
            )
        if answer.status_code == 404:
            raise NotFoundError(detail)
        if answer.status_code == 409:
            raise RefusedError(detail)
        if answer.status_code >= 400:
            raise CtlError(f"{service} answered {answer.status_code} to {method} {path}: {detail}")
        return answer.json()


def operator_from_env(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Operator:
    """An `Operator` for this environment (see the module's docstring)."""
    env = os.environ if env is None else env
    return Operator(service_urls(env), find_token(env, cwd or Path.cwd()))
