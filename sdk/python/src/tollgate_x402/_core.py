"""What the sync and async clients share: the calls (path, auth, body), headers, error mapping and the
retry policy. Neither sends anything itself."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from .errors import X402Error, error_for

Auth = Literal["key", "admin", "none"]

API = "/api/v1/x402"
DEFAULT_BASE_URL = "http://127.0.0.1:8403"
__version__ = "0.1.0"

# Codes that say "try again": a rate limit, an unavailable database or chain.
RETRYABLE_CODES = frozenset({"RATE_LIMITED", "SERVICE_UNAVAILABLE", "CHAIN_UNAVAILABLE"})


@dataclass(frozen=True)
class Call:
    """One request: what to send, and whether sending it twice is harmless."""

    method: str
    path: str
    auth: Auth = "key"
    json: Any = None
    params: dict[str, Any] | None = None
    # Safe to resend after a lost answer (reads). A POST is resent only when it never left
    # (connection refused), or when the service said nothing was done (429 RATE_LIMITED, 503).
    idempotent: bool = False


@dataclass
class Settings:
    api_key: str | None
    base_url: str
    timeout: float
    max_retries: int
    max_retry_wait: float
    backoff: float
    admin_key: str | None
    headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def headers_for(self, auth: Auth) -> dict[str, str]:
        h = {"accept": "application/json", "user-agent": f"tollgate-x402-python/{__version__}", **self.headers}
        if auth == "key":
            if not self.api_key:
                raise X402Error("this call needs an API key: X402Client(api_key='x402_live_…')")
            h["authorization"] = f"Bearer {self.api_key}"
        elif auth == "admin":
            if not self.admin_key:
                raise X402Error("this call needs the operator's admin key: X402Client(admin_key=…)")
            h["x-admin-key"] = self.admin_key
        return h


def retry_after(resp: httpx.Response) -> float | None:
    """`Retry-After` in seconds (a number or an HTTP date), if the answer has one."""
    v = resp.headers.get("retry-after")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


def body_of(resp: httpx.Response) -> dict[str, Any]:
    try:
        v = resp.json()
    except ValueError:
        return {"error": resp.text[:500] or f"HTTP {resp.status_code}"}
    return v if isinstance(v, dict) else {"data": v}


def outcome(resp: httpx.Response) -> dict[str, Any] | X402Error:
    """The body of a success, or the error an answer stands for."""
    body = body_of(resp)
    if resp.status_code < 400:
        return body
    headers = {k.lower(): v for k, v in resp.headers.items()}
    return error_for(resp.status_code, body, retry_after(resp), headers=headers)


def delay(err: X402Error | None, attempt: int, s: Settings) -> float | None:
    """How long to wait before attempt `attempt + 1`, or `None` not to retry."""
    if attempt >= s.max_retries:
        return None
    if err is not None and err.code not in RETRYABLE_CODES and not (err.status == 503 and not err.code):
        return None
    wait = err.retry_after if err is not None and err.retry_after is not None else None
    if wait is None:
        wait = s.backoff * (2**attempt) * (0.5 + random.random())
    if wait > s.max_retry_wait:
        return None
    return wait


def expected(amount: Decimal | str | float | int | None, atomic: int | None) -> str | None:
    """`expected_amount` as the API takes it: USDC as a decimal string (no float rounding)."""
    if atomic is not None:
        if amount is not None:
            raise ValueError("give expected_amount (USDC) or expected_atomic (atomic units), not both")
        return str(Decimal(atomic).scaleb(-6))
    if amount is None:
        return None
    return str(Decimal(str(amount)))


def listing_params(
    since: datetime | int | None,
    until: datetime | int | None,
    chain: str | None,
    outcome: str | None,
    page_size: int,
) -> dict[str, Any]:
    def secs(t: datetime | int) -> int:
        return int(t.timestamp()) if isinstance(t, datetime) else int(t)

    p: dict[str, Any] = {"limit": page_size}
    if since is not None:
        p["since"] = secs(since)
    if until is not None:
        p["until"] = secs(until)
    if chain:
        p["chain"] = chain
    if outcome:
        p["outcome"] = outcome
    return p


class Calls:
    """Every endpoint, as a `Call`."""

    @staticmethod
    def create_tenant(email: str, tier: str, name: str | None, slug: str | None, test: bool) -> Call:
        body: dict[str, Any] = {"email": email, "tier": tier}
        if name is not None:
            body["name"] = name
        if slug is not None:
            body["slug"] = slug
        if test:
            body["test"] = True
        return Call("POST", f"{API}/admin/create-tenant", "admin", body)

    usage = Call("GET", f"{API}/usage", idempotent=True)
    supported_chains = Call("GET", f"{API}/supported-chains", idempotent=True)
    keys = Call("GET", f"{API}/keys", idempotent=True)
    tenant = Call("GET", f"{API}/tenant", idempotent=True)
    facilitator_supported = Call("GET", "/facilitator/supported", idempotent=True)

    @staticmethod
    def verify(tx_hash: str, chain: str, expected_amount: str | None) -> Call:
        body: dict[str, Any] = {"tx_hash": tx_hash, "chain": chain}
        if expected_amount is not None:
            body["expected_amount"] = expected_amount
        return Call("POST", f"{API}/verify", json=body)

    @staticmethod
    def verify_x402(payload: dict[str, Any], requirements: dict[str, Any], path: str = f"{API}/verify") -> Call:
        return Call(
            "POST",
            path,
            json={
                "x402Version": payload.get("x402Version", 2),
                "paymentPayload": payload,
                "paymentRequirements": requirements,
            },
        )

    @staticmethod
    def settle(payload: dict[str, Any], requirements: dict[str, Any]) -> Call:
        return Calls.verify_x402(payload, requirements, "/facilitator/settle")

    @staticmethod
    def breakdown(since: datetime | int | None) -> Call:
        params = {} if since is None else listing_params(since, None, None, None, 1)
        params.pop("limit", None)
        return Call("GET", f"{API}/usage/breakdown", params=params, idempotent=True)

    @staticmethod
    def create_key(name: str, scopes: list[str] | None, test: bool) -> Call:
        return Call("POST", f"{API}/keys", json={"name": name, "scopes": scopes or [], "test": test})

    @staticmethod
    def revoke_key(key_id: str) -> Call:
        return Call("DELETE", f"{API}/keys/{key_id}", idempotent=True)

    @staticmethod
    def update_tenant(
        name: str | None,
        upstream: str | None,
        routes: list[dict[str, Any]] | None,
        pay_to_evm: str | None,
        pay_to_solana: str | None,
    ) -> Call:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if upstream is not None:
            body["upstream"] = upstream
        if routes is not None:
            body["routes"] = routes
        pay_to = {k: v for k, v in (("evm", pay_to_evm), ("solana", pay_to_solana)) if v is not None}
        if pay_to:
            body["pay_to"] = pay_to
        return Call("PATCH", f"{API}/tenant", json=body)

    @staticmethod
    def admin_tenants(page_size: int, after: str | None) -> Call:
        params: dict[str, Any] = {"limit": page_size}
        if after:
            params["after"] = after
        return Call("GET", f"{API}/admin/tenants", "admin", params=params, idempotent=True)

    @staticmethod
    def admin_tenant(tenant_id: str, action: str | None = None, body: Any = None) -> Call:
        path = f"{API}/admin/tenants/{tenant_id}" + (f"/{action}" if action else "")
        return Call("POST" if action else "GET", path, "admin", json=body, idempotent=action is None)

    @staticmethod
    def page(kind: str, params: dict[str, Any], cursor: str | None) -> Call:
        p = dict(params)
        if cursor:
            p["cursor"] = cursor
        return Call("GET", f"{API}/{kind}", params=p, idempotent=True)
