"""The clients: `X402Client` (sync) and `AsyncX402Client` (asyncio), on httpx, with the same methods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from . import _core
from ._core import Call, Calls, Settings
from .errors import X402Error
from .models import (
    ApiKey,
    CreatedKey,
    CreatedTenant,
    Payment,
    SettleResult,
    SupportedChains,
    Tenant,
    Usage,
    Verification,
    VerifyResult,
    X402VerifyResult,
)

Amount = Decimal | str | float | int


def _settings(
    api_key: str | None,
    base_url: str,
    timeout: float,
    max_retries: int,
    max_retry_wait: float,
    backoff: float,
    admin_key: str | None,
    headers: dict[str, str] | None,
) -> Settings:
    return Settings(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        max_retry_wait=max_retry_wait,
        backoff=backoff,
        admin_key=admin_key,
        headers=dict(headers or {}),
    )


def _unreachable(e: httpx.HTTPError, s: Settings) -> X402Error:
    return X402Error(f"tollgate at {s.base_url} did not answer: {e.__class__.__name__}: {e}", status=0)


def _resendable(e: httpx.HTTPError, call: Call) -> bool:
    # A request that never left can always be sent again; one that may have arrived only if harmless.
    return isinstance(e, httpx.ConnectError | httpx.ConnectTimeout) or call.idempotent


class X402Client:
    """The hosted API, synchronously.

    `X402Client(api_key, base_url, timeout=30)` as the contract's SDK has it; calls that fail with
    429 `RATE_LIMITED` or 503 are retried (`max_retries`, honouring `Retry-After` up to
    `max_retry_wait` seconds, else exponential backoff from `backoff`). `QUOTA_EXCEEDED` is not
    retried: it refills at the month's reset (`X402QuotaExceeded.reset_at`).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str = _core.DEFAULT_BASE_URL,
        timeout: float = 30,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30,
        backoff: float = 0.25,
        admin_key: str | None = None,
        headers: dict[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._s = _settings(api_key, base_url, timeout, max_retries, max_retry_wait, backoff, admin_key, headers)
        self._owns = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)

    # -- plumbing --------------------------------------------------------------------------------

    def _send(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                resp = self._http.request(
                    call.method,
                    self._s.url(call.path),
                    json=call.json,
                    params=call.params,
                    headers=self._s.headers_for(call.auth),
                    timeout=self._s.timeout,
                )
            except httpx.HTTPError as e:
                wait = _core.delay(None, attempt, self._s) if _resendable(e, call) else None
                if wait is None:
                    raise _unreachable(e, self._s) from e
                time.sleep(wait)
                attempt += 1
                continue
            out = _core.outcome(resp)
            if not isinstance(out, X402Error):
                return out
            wait = _core.delay(out, attempt, self._s)
            if wait is None:
                raise out
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        if self._owns:
            self._http.close()

    def __enter__(self) -> X402Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the contract's calls --------------------------------------------------------------------

    def create_tenant(
        self, email: str, tier: str = "free", name: str | None = None, *, slug: str | None = None, test: bool = False
    ) -> CreatedTenant:
        """Operator only (`admin_key`): a tenant and its first API key, shown this once."""
        d = self._send(Calls.create_tenant(email, tier, name, slug, test))
        return CreatedTenant(tenant=Tenant.parse(d["tenant"]), api_key=str(d["api_key"]))

    def get_usage(self) -> Usage:
        return Usage.parse(self._send(Calls.usage))

    def get_supported_chains(self) -> SupportedChains:
        return SupportedChains.parse(self._send(Calls.supported_chains))

    def verify_payment(
        self,
        tx_hash: str,
        chain: str,
        expected_amount: Amount | None = None,
        *,
        expected_atomic: int | None = None,
        raise_on_failure: bool = False,
    ) -> VerifyResult:
        """Whether transaction `tx_hash` on `chain` paid the tenant at least `expected_amount` USDC (or
        `expected_atomic` units). A failed proof is a result with `success=False` unless
        `raise_on_failure`, which raises its exception (`TxAlreadyUsed`, `AmountTooLow`, …)."""
        call = Calls.verify(tx_hash, chain, _core.expected(expected_amount, expected_atomic))
        r = VerifyResult.parse(self._send(call))
        return r.raise_for_failure() if raise_on_failure else r

    # -- beyond the contract ---------------------------------------------------------------------

    def verify_x402(self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]) -> X402VerifyResult:
        """An x402 payment checked as a facilitator's `/verify` would (nothing settled)."""
        return X402VerifyResult.parse(self._send(Calls.verify_x402(payment_payload, payment_requirements)))

    def usage_breakdown(self, since: datetime | int | None = None) -> dict[str, Any]:
        """Verifications and proxy payments by day, network and outcome (since the month's start)."""
        return self._send(Calls.breakdown(since))

    def list_keys(self) -> list[ApiKey]:
        return [ApiKey.parse(k) for k in self._send(Calls.keys).get("keys", [])]

    def create_key(self, name: str, scopes: list[str] | None = None, *, test: bool = False) -> CreatedKey:
        """A new key (scopes from `verify`, `settle`, `analytics`, `manage`; none: all), shown once."""
        d = self._send(Calls.create_key(name, scopes, test))
        return CreatedKey(key=ApiKey.parse(d["key"]), api_key=str(d["api_key"]))

    def revoke_key(self, key_id: str) -> None:
        self._send(Calls.revoke_key(key_id))

    def get_tenant(self) -> Tenant:
        return Tenant.parse(self._send(Calls.tenant)["tenant"])

    def update_tenant(
        self,
        *,
        name: str | None = None,
        upstream: str | None = None,
        routes: list[dict[str, Any]] | None = None,
        pay_to_evm: str | None = None,
        pay_to_solana: str | None = None,
    ) -> Tenant:
        """Changes the tenant's name, upstream, priced routes or payees (each checked by the service)."""
        call = Calls.update_tenant(name, upstream, routes, pay_to_evm, pay_to_solana)
        return Tenant.parse(self._send(call)["tenant"])

    def verifications(
        self,
        *,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        chain: str | None = None,
        outcome: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Verification]:
        """Every verification, newest first, fetched page by page as the iteration goes."""
        params = _core.listing_params(since, until, chain, outcome, page_size)
        for row in self._pages("verifications", params):
            yield Verification.parse(row)

    def payments(
        self,
        *,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        chain: str | None = None,
        outcome: str | None = None,
        page_size: int = 100,
    ) -> Iterator[Payment]:
        """Every payment through the tenant's proxy, newest first, page by page."""
        params = _core.listing_params(since, until, chain, outcome, page_size)
        for row in self._pages("payments", params):
            yield Payment.parse(row)

    def _pages(self, kind: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            d = self._send(Calls.page(kind, params, cursor))
            yield from d.get(kind, [])
            cursor = d.get("next_cursor")
            if not cursor:
                return

    def facilitator_supported(self) -> dict[str, Any]:
        """The x402 facilitator's `/supported`: kinds, extensions and signers for the tenant's plan."""
        return self._send(Calls.facilitator_supported)

    def facilitator_verify(
        self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]
    ) -> X402VerifyResult:
        call = Calls.verify_x402(payment_payload, payment_requirements, "/facilitator/verify")
        return X402VerifyResult.parse(self._send(call))

    def facilitator_settle(self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]) -> SettleResult:
        """Settles a payment to the tenant's payTo (a lost answer is not resent: the same payload, sent
        again, collects the same settlement)."""
        return SettleResult.parse(self._send(Calls.settle(payment_payload, payment_requirements)))

    # -- the operator (admin_key) ------------------------------------------------------------------

    def list_tenants(self, *, page_size: int = 100) -> Iterator[Tenant]:
        """Every tenant, page by page (operator only)."""
        after: str | None = None
        while True:
            d = self._send(Calls.admin_tenants(page_size, after))
            for t in d.get("tenants", []):
                yield Tenant.parse(t)
            after = d.get("next_cursor")
            if not after:
                return

    def tenant(self, tenant_id: str) -> Tenant:
        """One tenant and this month's use (operator only)."""
        return Tenant.parse(self._send(Calls.admin_tenant(tenant_id))["tenant"])

    def set_plan(self, tenant_id: str, tier: str) -> Tenant:
        return Tenant.parse(self._send(Calls.admin_tenant(tenant_id, "plan", {"tier": tier}))["tenant"])

    def suspend(self, tenant_id: str) -> Tenant:
        """Its priced routes take no payment and its keys are refused until `resume`."""
        return Tenant.parse(self._send(Calls.admin_tenant(tenant_id, "suspend"))["tenant"])

    def resume(self, tenant_id: str) -> Tenant:
        return Tenant.parse(self._send(Calls.admin_tenant(tenant_id, "resume"))["tenant"])


class AsyncX402Client:
    """`X402Client` for asyncio: the same methods, awaited; `async with` closes it."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str = _core.DEFAULT_BASE_URL,
        timeout: float = 30,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30,
        backoff: float = 0.25,
        admin_key: str | None = None,
        headers: dict[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._s = _settings(api_key, base_url, timeout, max_retries, max_retry_wait, backoff, admin_key, headers)
        self._owns = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def _send(self, call: Call) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                resp = await self._http.request(
                    call.method,
                    self._s.url(call.path),
                    json=call.json,
                    params=call.params,
                    headers=self._s.headers_for(call.auth),
                    timeout=self._s.timeout,
                )
            except httpx.HTTPError as e:
                wait = _core.delay(None, attempt, self._s) if _resendable(e, call) else None
                if wait is None:
                    raise _unreachable(e, self._s) from e
                await asyncio.sleep(wait)
                attempt += 1
                continue
            out = _core.outcome(resp)
            if not isinstance(out, X402Error):
                return out
            wait = _core.delay(out, attempt, self._s)
            if wait is None:
                raise out
            await asyncio.sleep(wait)
            attempt += 1

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncX402Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def create_tenant(
        self, email: str, tier: str = "free", name: str | None = None, *, slug: str | None = None, test: bool = False
    ) -> CreatedTenant:
        d = await self._send(Calls.create_tenant(email, tier, name, slug, test))
        return CreatedTenant(tenant=Tenant.parse(d["tenant"]), api_key=str(d["api_key"]))

    async def get_usage(self) -> Usage:
        return Usage.parse(await self._send(Calls.usage))

    async def get_supported_chains(self) -> SupportedChains:
        return SupportedChains.parse(await self._send(Calls.supported_chains))

    async def verify_payment(
        self,
        tx_hash: str,
        chain: str,
        expected_amount: Amount | None = None,
        *,
        expected_atomic: int | None = None,
        raise_on_failure: bool = False,
    ) -> VerifyResult:
        call = Calls.verify(tx_hash, chain, _core.expected(expected_amount, expected_atomic))
        r = VerifyResult.parse(await self._send(call))
        return r.raise_for_failure() if raise_on_failure else r

    async def verify_x402(
        self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]
    ) -> X402VerifyResult:
        return X402VerifyResult.parse(await self._send(Calls.verify_x402(payment_payload, payment_requirements)))

    async def usage_breakdown(self, since: datetime | int | None = None) -> dict[str, Any]:
        return await self._send(Calls.breakdown(since))

    async def list_keys(self) -> list[ApiKey]:
        return [ApiKey.parse(k) for k in (await self._send(Calls.keys)).get("keys", [])]

    async def create_key(self, name: str, scopes: list[str] | None = None, *, test: bool = False) -> CreatedKey:
        d = await self._send(Calls.create_key(name, scopes, test))
        return CreatedKey(key=ApiKey.parse(d["key"]), api_key=str(d["api_key"]))

    async def revoke_key(self, key_id: str) -> None:
        await self._send(Calls.revoke_key(key_id))

    async def get_tenant(self) -> Tenant:
        return Tenant.parse((await self._send(Calls.tenant))["tenant"])

    async def update_tenant(
        self,
        *,
        name: str | None = None,
        upstream: str | None = None,
        routes: list[dict[str, Any]] | None = None,
        pay_to_evm: str | None = None,
        pay_to_solana: str | None = None,
    ) -> Tenant:
        call = Calls.update_tenant(name, upstream, routes, pay_to_evm, pay_to_solana)
        return Tenant.parse((await self._send(call))["tenant"])

    async def verifications(
        self,
        *,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        chain: str | None = None,
        outcome: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Verification]:
        params = _core.listing_params(since, until, chain, outcome, page_size)
        async for row in self._pages("verifications", params):
            yield Verification.parse(row)

    async def payments(
        self,
        *,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        chain: str | None = None,
        outcome: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Payment]:
        params = _core.listing_params(since, until, chain, outcome, page_size)
        async for row in self._pages("payments", params):
            yield Payment.parse(row)

    async def _pages(self, kind: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            d = await self._send(Calls.page(kind, params, cursor))
            for row in d.get(kind, []):
                yield row
            cursor = d.get("next_cursor")
            if not cursor:
                return

    async def facilitator_supported(self) -> dict[str, Any]:
        return await self._send(Calls.facilitator_supported)

    async def facilitator_verify(
        self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]
    ) -> X402VerifyResult:
        call = Calls.verify_x402(payment_payload, payment_requirements, "/facilitator/verify")
        return X402VerifyResult.parse(await self._send(call))

    async def facilitator_settle(
        self, payment_payload: dict[str, Any], payment_requirements: dict[str, Any]
    ) -> SettleResult:
        return SettleResult.parse(await self._send(Calls.settle(payment_payload, payment_requirements)))

    async def list_tenants(self, *, page_size: int = 100) -> AsyncIterator[Tenant]:
        after: str | None = None
        while True:
            d = await self._send(Calls.admin_tenants(page_size, after))
            for t in d.get("tenants", []):
                yield Tenant.parse(t)
            after = d.get("next_cursor")
            if not after:
                return

    async def tenant(self, tenant_id: str) -> Tenant:
        return Tenant.parse((await self._send(Calls.admin_tenant(tenant_id)))["tenant"])

    async def set_plan(self, tenant_id: str, tier: str) -> Tenant:
        return Tenant.parse((await self._send(Calls.admin_tenant(tenant_id, "plan", {"tier": tier})))["tenant"])

    async def suspend(self, tenant_id: str) -> Tenant:
        return Tenant.parse((await self._send(Calls.admin_tenant(tenant_id, "suspend")))["tenant"])

    async def resume(self, tenant_id: str) -> Tenant:
        return Tenant.parse((await self._send(Calls.admin_tenant(tenant_id, "resume")))["tenant"])
