"""Typed results. Money is an `int` of USDC atomic units (6 decimals); `usdc()` and `atomic()` convert
to and from `Decimal` without floating point."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .errors import X402Error, error_for

USDC_DECIMALS = 6


def usdc(atomic_units: int, decimals: int = USDC_DECIMALS) -> Decimal:
    """Atomic units as USDC: `usdc(10_000) == Decimal("0.01")`."""
    return Decimal(atomic_units).scaleb(-decimals)


def atomic(amount: Decimal | str | int, decimals: int = USDC_DECIMALS) -> int:
    """USDC as atomic units: `atomic("0.01") == 10_000`; more decimals than the token has is an error."""
    d = Decimal(str(amount)).scaleb(decimals)
    if d != d.to_integral_value():
        raise ValueError(f"{amount} USDC has more than {decimals} decimals")
    return int(d)


def _when(v: object) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class Usage:
    """`GET /usage`: this month's allowance (`-1`: unlimited)."""

    tier: str
    verifications_used: int
    verifications_limit: int
    verifications_remaining: int
    quota_reset_date: datetime | None
    enabled_chains: list[str]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def unlimited(self) -> bool:
        return self.verifications_limit < 0

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Usage:
        return cls(
            tier=str(d["tier"]),
            verifications_used=int(d["verifications_used"]),
            verifications_limit=int(d["verifications_limit"]),
            verifications_remaining=int(d["verifications_remaining"]),
            quota_reset_date=_when(d.get("quota_reset_date")),
            enabled_chains=[str(c) for c in d.get("enabled_chains", [])],
            raw=d,
        )


@dataclass(frozen=True)
class SupportedChains:
    """`GET /supported-chains`."""

    tier: str
    enabled_chains: list[str]
    all_chains: list[str]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SupportedChains:
        return cls(
            tier=str(d["tier"]),
            enabled_chains=[str(c) for c in d.get("enabled_chains", [])],
            all_chains=[str(c) for c in d.get("all_chains", [])],
            raw=d,
        )


@dataclass(frozen=True)
class VerifyResult:
    """`POST /verify`: whether a transaction on chain paid the tenant. A proof that did not verify is
    a result with `success=False` and its `error_code` (as the contract has it); `raise_for_failure()`
    turns it into its exception (`TxAlreadyUsed`, `AmountTooLow`, …)."""

    success: bool
    tx_hash: str
    chain: str
    amount_atomic: int | None
    from_address: str | None
    to_address: str | None
    confirmations: int
    risk_score: int | None
    error: str | None
    error_code: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def amount_usdc(self) -> Decimal | None:
        return None if self.amount_atomic is None else usdc(self.amount_atomic)

    def __bool__(self) -> bool:
        return self.success

    def error_for(self) -> X402Error | None:
        """The exception this result stands for, if it failed."""
        if self.success:
            return None
        return error_for(200, self.raw, verification=True)

    def raise_for_failure(self) -> VerifyResult:
        e = self.error_for()
        if e is not None:
            raise e
        return self

    @classmethod
    def parse(cls, d: dict[str, Any]) -> VerifyResult:
        amount = d.get("amount_atomic")
        return cls(
            success=bool(d.get("success")),
            tx_hash=str(d.get("tx_hash") or ""),
            chain=str(d.get("chain") or ""),
            amount_atomic=int(amount) if amount is not None else None,
            from_address=_str(d.get("from_address")),
            to_address=_str(d.get("to_address")),
            confirmations=int(d.get("confirmations") or 0),
            risk_score=int(d["risk_score"]) if d.get("risk_score") is not None else None,
            error=_str(d.get("error")),
            error_code=_str(d.get("error_code")),
            raw=d,
        )


@dataclass(frozen=True)
class X402VerifyResult:
    """`POST /verify` in the x402 form (and `/facilitator/verify`)."""

    is_valid: bool
    invalid_reason: str | None
    payer: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> X402VerifyResult:
        return cls(
            is_valid=bool(d.get("isValid")),
            invalid_reason=_str(d.get("invalidReason")),
            payer=_str(d.get("payer")),
            raw=d,
        )


@dataclass(frozen=True)
class SettleResult:
    """`/facilitator/settle`."""

    success: bool
    transaction: str
    network: str
    payer: str | None
    error_reason: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SettleResult:
        return cls(
            success=bool(d.get("success")),
            transaction=str(d.get("transaction") or ""),
            network=str(d.get("network") or ""),
            payer=_str(d.get("payer")),
            error_reason=_str(d.get("errorReason")),
            raw=d,
        )


@dataclass(frozen=True)
class Tenant:
    """A tenant as the API shows it."""

    id: str
    slug: str
    name: str
    email: str
    tier: str
    status: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def upstream(self) -> str | None:
        return _str(self.raw.get("upstream"))

    @property
    def routes(self) -> list[dict[str, Any]]:
        r = self.raw.get("routes")
        return r if isinstance(r, list) else []

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Tenant:
        return cls(
            id=str(d["id"]),
            slug=str(d.get("slug") or ""),
            name=str(d.get("name") or ""),
            email=str(d.get("email") or ""),
            tier=str(d.get("tier") or d.get("plan") or ""),
            status=str(d.get("status") or ""),
            raw=d,
        )


@dataclass(frozen=True)
class CreatedTenant:
    """`POST /admin/create-tenant`: the tenant and its first key (shown this once)."""

    tenant: Tenant
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: its prefix, never the key."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ApiKey:
        return cls(
            id=str(d["id"]),
            name=str(d.get("name") or ""),
            prefix=str(d.get("prefix") or ""),
            scopes=[str(s) for s in d.get("scopes") or []],
            created_at=_when(d.get("created_at")),
            last_used_at=_when(d.get("last_used_at")),
            revoked_at=_when(d.get("revoked_at")),
        )


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its listing, and the key itself (shown this once)."""

    key: ApiKey
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class Verification:
    """One row of `GET /verifications` (a proof or x402-form verification the tenant asked for)."""

    id: str
    at: datetime
    kind: str
    chain: str
    success: bool
    tx_hash: str | None
    error_code: str | None
    amount_atomic: int | None
    payer: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Verification:
        amount = d.get("amount")
        return cls(
            id=str(d["id"]),
            at=datetime.fromtimestamp(int(d["at_ms"]) / 1000, tz=timezone.utc),
            kind=str(d.get("kind") or ""),
            chain=str(d.get("chain") or ""),
            success=bool(d.get("success")),
            tx_hash=_str(d.get("tx_hash")),
            error_code=_str(d.get("error_code")),
            amount_atomic=int(str(amount)) if amount is not None and amount != "" else None,
            payer=_str(d.get("payer")),
            raw=d,
        )


@dataclass(frozen=True)
class Payment:
    """One row of `GET /payments` (a payment through the tenant's proxy)."""

    network: str
    payer: str
    amount_atomic: int
    route: str
    state: str
    tx_hash: str | None
    claimed_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Payment:
        return cls(
            network=str(d.get("network") or ""),
            payer=str(d.get("payer") or ""),
            amount_atomic=int(d.get("amount") or 0),
            route=str(d.get("route") or ""),
            state=str(d.get("state") or ""),
            tx_hash=_str(d.get("tx_hash")),
            claimed_at=_when(d.get("claimed_at")),
            raw=d,
        )
