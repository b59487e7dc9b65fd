"""An in-memory accounts API for the website's unit tests, spoken to over httpx.MockTransport.

It keeps users, tokens, cards and renewals as the contract describes them, answers problems in
the API's shape, and records every request so tests can look at headers and URLs.
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

PLANS = [
    {
        "code": "JP-30D-10GB",
        "name": "Japan 30 days 10 GB",
        "kind": "monthly",
        "data_mb": 10240,
        "validity_days": 30,
        "countries": ["JP"],
        "prices": {"USD": 1900, "CNY": 13900},
    },
    {
        "code": "ASIA-1D-1GB",
        "name": "Asia day pass",
        "kind": "daily",
        "data_mb": 1024,
        "validity_days": 1,
        "countries": ["JP", "KR", "TH"],
        "prices": {"USD": 500, "CNY": 3500},
    },
]


def problem(status: int, kind: str, detail: str, **extra: Any) -> httpx.Response:
    """A problem answer as accounts gives it."""
    body = {
        "type": f"https://esim.example/problems/{kind}",
        "title": "Error",
        "status": status,
        "detail": detail,
        **extra,
    }
    headers = {"content-type": "application/problem+json"}
    if status == 429:
        headers["Retry-After"] = "42"
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def validation(*errors: tuple[str, str, str]) -> httpx.Response:
    """A 422 with field errors (field, message, type)."""
    items = [{"field": f, "message": m, "type": t} for f, m, t in errors]
    return problem(422, "validation", "The request is not valid", errors=items)


@dataclass
class FakeAccounts:
    """The accounts API's state and answers."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    access: dict[str, str] = field(default_factory=dict)  # access token -> email
    refresh: dict[str, str] = field(default_factory=dict)  # refresh token -> email
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)  # iccid -> card
    owners: dict[str, str] = field(default_factory=dict)  # iccid -> email
    renewals: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    #: Answers forced for a (method, path): a test's way to have accounts refuse something.
    forced: dict[tuple[str, str], httpx.Response] = field(default_factory=dict)
    promotions: list[dict[str, Any]] | None = None
    reset_code: str = "123456"
    logged_out: list[str] = field(default_factory=list)
    up: bool = True

    def transport(self) -> httpx.MockTransport:
        """The transport the website's client is given."""
        return httpx.MockTransport(self.handle)

    def add_user(self, email: str, password: str = "a long password", **extra: Any) -> None:
        """A registered traveller."""
        self.users[email] = {
            "id": str(uuid.uuid4()),
            "email": email,
            "name": extra.get("name"),
            "phone": extra.get("phone"),
            "locale": extra.get("locale", "en"),
            "notify": {"email": True, "sms": True},
            "created_at": "2026-12-01T10:00:00Z",
        }
        self.passwords[email] = password

    def add_card(self, email: str, iccid: str = "8986012345678901234", **extra: Any) -> None:
        """A card bound to `email`, with a live plan."""
        self.owners[iccid] = email
        self.cards[iccid] = {
            "iccid": iccid,
            "plan_code": "JP-30D-10GB",
            "state": "active",
            "data_total_mb": 10240,
            "data_remaining_mb": 3584,
            "usage_as_of": "2026-12-06T04:30:00Z",
            "valid_from": "2026-11-20T00:00:00Z",
            "valid_until": "2026-12-20T00:00:00Z",
            "queued": [],
            "auto_renew": False,
            "auto_renew_plan_code": None,
            **extra,
        }

    def issue(self, email: str) -> dict[str, Any]:
        """New tokens for `email`."""
        access, refresh = f"acc-{uuid.uuid4().hex}", f"ref-{uuid.uuid4().hex}"
        self.access[access] = email
        self.refresh[refresh] = email
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": 900,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        self.requests.append(request)
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        key = (request.method, request.url.path)
        if key in self.forced:
            return self.forced[key]
        return self._route(request)

    def _json(self, request: httpx.Request) -> Any:
        return json.loads(request.content or b"{}")

    def _caller(self, request: httpx.Request) -> str | None:
        header = request.headers.get("authorization", "")
        return self.access.get(header.removeprefix("Bearer "))

    def _route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        if path == "/health/live":
            return httpx.Response(200, json={"status": "ok"})
        if (method, path) == ("POST", "/v1/users"):
            body = self._json(request)
            if body["email"] in self.users:
                return problem(409, "email-taken", f"{body['email']} is already registered")
            if len(body.get("password", "")) < 8:
                return validation(
                    (
                        "body.password",
                        "String should have at least 8 characters",
                        "string_too_short",
                    )
                )
            self.add_user(body["email"], body["password"], **body)
            return httpx.Response(201, json=self.users[body["email"]])
        if (method, path) == ("POST", "/v1/auth/token"):
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if form.get("grant_type") == "refresh_token":
                email = self.refresh.pop(form.get("refresh_token", ""), None)
                if email is None:
                    return problem(401, "invalid-grant", "refresh token not valid")
                return httpx.Response(200, json=self.issue(email))
            email = form.get("username", "")
            if self.passwords.get(email) != form.get("password"):
                return problem(401, "invalid-credentials", "wrong e-mail or password")
            return httpx.Response(200, json=self.issue(email))
        if (method, path) == ("POST", "/v1/auth/logout"):
            token = self._json(request)["refresh_token"]
            self.logged_out.append(token)
            self.refresh.pop(token, None)
            return httpx.Response(204)
        if (method, path) == ("POST", "/v1/auth/password-reset"):
            return httpx.Response(202, json={"detail": "sent"})
        if (method, path) == ("POST", "/v1/auth/password-reset/confirm"):
            body = self._json(request)
            if body["code"] != self.reset_code:
                return problem(400, "invalid-code", "the code is wrong, used or expired")
            self.passwords[body["email"]] = body["new_password"]
            return httpx.Response(204)
        if path == "/v1/plans":
            currency = request.url.params.get("currency", "USD")
            country = request.url.params.get("country")
            return httpx.Response(
                200,
                json=[
                    {
                        **{k: v for k, v in p.items() if k != "prices"},
                        "price": {"amount": p["prices"][currency], "currency": currency},
                    }
                    for p in PLANS
                    if not country or country in p["countries"]
                ],
            )
        if path == "/v1/promotions":
            if self.promotions is None:
                return problem(404, "not-found", "Not Found")
            return httpx.Response(200, json=self.promotions)
        caller = self._caller(request)
        if caller is None:
            return problem(401, "unauthorized", "An access token is required.")
        return self._signed_in(request, caller)

    def _signed_in(self, request: httpx.Request, caller: str) -> httpx.Response:
        method, path = request.method, request.url.path
        parts = path.strip("/").split("/")
        if path == "/v1/users/me":
            if method == "PATCH":
                body = self._json(request)
                if "phone" in body and body["phone"] and not body["phone"].startswith("+"):
                    return validation(
                        ("body.phone", "String should match pattern", "string_pattern_mismatch")
                    )
                self.users[caller].update({k: v for k, v in body.items()})
            return httpx.Response(200, json=self.users[caller])
        if path == "/v1/cards":
            if method == "POST":
                body = self._json(request)
                if body["iccid"] in self.owners:
                    return problem(409, "card-taken", "bound to another account")
                if not body["iccid"].startswith("8986"):
                    return problem(404, "card-not-found", "no such card")
                self.add_card(
                    caller,
                    body["iccid"],
                    plan_code=None,
                    data_total_mb=0,
                    data_remaining_mb=0,
                    valid_until=None,
                    usage_as_of=None,
                )
                return httpx.Response(201, json=self.cards[body["iccid"]])
            return httpx.Response(
                200, json=[c for i, c in self.cards.items() if self.owners[i] == caller]
            )
        if parts[:2] == ["v1", "cards"] and len(parts) >= 3:
            iccid = parts[2]
            if self.owners.get(iccid) != caller:
                return problem(404, "card-not-found", "no such card")
            rest = parts[3:]
            if not rest:
                return httpx.Response(200, json=self.cards[iccid])
            if rest == ["quote"]:
                body = self._json(request)
                plan = next((p for p in PLANS if p["code"] == body["plan_code"]), None)
                if plan is None:
                    return problem(422, "unknown-plan", "no such plan")
                if body.get("promo_code") and body["promo_code"].upper() != "WELCOME10":
                    return problem(422, "promo-unknown", "no promotion")
                price = plan["prices"]["USD"]
                off = price // 10 if body.get("promo_code") else 0
                return httpx.Response(
                    200,
                    json={
                        "plan_code": plan["code"],
                        "start": body.get("start", "after_current"),
                        "price": {"amount": price, "currency": "USD"},
                        "discount": {"amount": off, "currency": "USD"},
                        "total": {"amount": price - off, "currency": "USD"},
                        "promo_code": body.get("promo_code"),
                        "valid_from": "2026-12-20T00:00:00Z"
                        if body.get("start") != "now"
                        else "2026-12-06T05:00:00Z",
                        "valid_until": "2027-01-19T00:00:00Z",
                        "forfeits": {"data_mb": 3584, "days": 14}
                        if body.get("start") == "now"
                        else {"data_mb": 0, "days": 0},
                    },
                )
            if rest == ["renewals"] and method == "POST":
                body = self._json(request)
                payment = body["payment"]
                renewal_id = request.headers.get("idempotency-key") or str(uuid.uuid4())
                self.renewals[renewal_id] = {
                    "renewal_id": renewal_id,
                    "iccid": iccid,
                    "plan_code": body["plan_code"],
                    "status": "PAYMENT_PENDING",
                    "start": body.get("start", "after_current"),
                    "price": {"amount": 1900, "currency": "USD"},
                    "discount": None,
                    "promo_code": None,
                    "reason": None,
                    "detail": None,
                    "valid_from": None,
                    "valid_until": None,
                    "bundle_state": None,
                    "created_at": "2026-12-06T05:00:00Z",
                    "updated_at": "2026-12-06T05:00:00Z",
                    "timeline": [
                        {"step": "requested", "status": "REQUESTED", "at": "2026-12-06T05:00:00Z"}
                    ],
                    "_payment": payment,
                }
                return httpx.Response(202, json={"renewal_id": renewal_id, "status": "REQUESTED"})
            if rest == ["renewals"]:
                items = [
                    {k: v for k, v in r.items() if k not in ("timeline", "_payment")}
                    for r in self.renewals.values()
                    if r["iccid"] == iccid
                ]
                return httpx.Response(200, json={"items": items, "next_cursor": None})
            if rest == ["auto-renew"]:
                body = self._json(request)
                self.cards[iccid]["auto_renew"] = body["enabled"]
                self.cards[iccid]["auto_renew_plan_code"] = body.get("plan_code")
                return httpx.Response(200, json=self.cards[iccid])
        if parts[:2] == ["v1", "renewals"] and len(parts) >= 3:
            renewal = self.renewals.get(parts[2])
            if renewal is None or self.owners.get(renewal["iccid"]) != caller:
                return problem(404, "renewal-not-found", "no such renewal")
            if parts[3:] == ["cancel"]:
                if renewal.get("bundle_state") != "queued":
                    return problem(409, "not-cancellable", "live")
                renewal["status"] = "CANCELLING"
                return httpx.Response(202, json={"renewal_id": parts[2], "status": "CANCELLING"})
            return httpx.Response(200, json={k: v for k, v in renewal.items() if k != "_payment"})
        return problem(404, "not-found", "Not Found")
