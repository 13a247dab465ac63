"""The errors a tollgate API call can end in.

The contract's three names are kept (`X402AuthError`, `X402QuotaExceeded`, `X402APIError`), so code written
for it catches what it always caught; each error code has its own class under them, carrying the code,
the message, the HTTP status and the body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class X402Error(Exception):
    """Any error the service answered (or failed to answer) with."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        status: int = 0,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        #: The answer's headers (lower-case names), e.g. `ratelimit-remaining`.
        self.headers: dict[str, str] = headers or {}
        self.message = message
        self.code = code
        self.status = status
        self.body: dict[str, Any] = body or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}: {self.message}{where}" if self.code else f"{self.message}{where}"


class X402AuthError(X402Error):
    """401: the key is missing, malformed, unknown or revoked (`INVALID_API_KEY`)."""


class X402QuotaExceeded(X402Error):
    """429 `QUOTA_EXCEEDED`: the month's allowance is used up. Not retried: it refills at `reset_at`."""

    @property
    def reset_at(self) -> datetime | None:
        v = self.body.get("quota_reset_date")
        return _when(v)

    @property
    def upgrade_url(self) -> str | None:
        v = self.body.get("upgrade_url")
        return v if isinstance(v, str) and v else None


class X402APIError(X402Error):
    """Every other error (400, 403, 404, 409, 429 rate limits, 5xx, and failed verifications)."""


# -- 4xx / 5xx ---------------------------------------------------------------------------------


class InvalidRequest(X402APIError):
    """400 `INVALID_REQUEST`: a field is missing or malformed; the message names it."""


class InsufficientScope(X402APIError):
    """403 `INSUFFICIENT_SCOPE`: the key lacks the scope this call needs."""


class TenantSuspended(X402APIError):
    """403 `TENANT_SUSPENDED`."""


class ChainNotEnabled(X402APIError):
    """403 `CHAIN_NOT_ENABLED`: the chain is not in the tenant's plan."""


class NotFound(X402APIError):
    """404 `NOT_FOUND`."""


class SlugTaken(X402APIError):
    """409 `SLUG_TAKEN`."""


class GasBudgetExceeded(X402QuotaExceeded):
    """429 `GAS_BUDGET_EXCEEDED`: the month's settlement gas of the plan is used up."""


class RateLimited(X402APIError):
    """429 `RATE_LIMITED`: a rate limit (per key) refused the call; retried by the client first."""

    @property
    def limit(self) -> int | None:
        return _int(self.headers.get("ratelimit-limit"))

    @property
    def remaining(self) -> int | None:
        return _int(self.headers.get("ratelimit-remaining"))


class ServiceUnavailable(X402APIError):
    """503 `SERVICE_UNAVAILABLE` (the service's database) or a gateway that did not answer."""


class ChainUnavailable(ServiceUnavailable):
    """503 `CHAIN_UNAVAILABLE`: the chain's RPC cannot be reached; nothing was counted."""


# -- failed verifications (200 with success: false) ---------------------------------------------


class VerificationFailed(X402APIError):
    """A proof that did not verify (raised by `VerifyResult.raise_for_failure()`)."""


class TxAlreadyUsed(VerificationFailed):
    """`TX_ALREADY_USED`: the transaction was already verified as a payment (see `first_used_at`)."""

    @property
    def first_used_at(self) -> datetime | None:
        return _when(self.body.get("first_used_at"))


class TxNotFound(VerificationFailed):
    """`TX_NOT_FOUND`."""


class TxFailed(VerificationFailed):
    """`TX_FAILED`: the transaction reverted."""


class WrongRecipient(VerificationFailed):
    """`WRONG_RECIPIENT`: it paid someone other than the tenant's payTo."""


class AmountTooLow(VerificationFailed):
    """`AMOUNT_TOO_LOW`."""


class InsufficientConfirmations(VerificationFailed):
    """`INSUFFICIENT_CONFIRMATIONS`: ask again shortly."""


class TxTooOld(VerificationFailed):
    """`TX_TOO_OLD`."""


BY_CODE: dict[str, type[X402Error]] = {
    "INVALID_API_KEY": X402AuthError,
    "INVALID_REQUEST": InvalidRequest,
    "INSUFFICIENT_SCOPE": InsufficientScope,
    "TENANT_SUSPENDED": TenantSuspended,
    "CHAIN_NOT_ENABLED": ChainNotEnabled,
    "NOT_FOUND": NotFound,
    "SLUG_TAKEN": SlugTaken,
    "QUOTA_EXCEEDED": X402QuotaExceeded,
    "GAS_BUDGET_EXCEEDED": GasBudgetExceeded,
    "RATE_LIMITED": RateLimited,
    "SERVICE_UNAVAILABLE": ServiceUnavailable,
    "CHAIN_UNAVAILABLE": ChainUnavailable,
    "TX_ALREADY_USED": TxAlreadyUsed,
    "TX_NOT_FOUND": TxNotFound,
    "TX_FAILED": TxFailed,
    "WRONG_RECIPIENT": WrongRecipient,
    "AMOUNT_TOO_LOW": AmountTooLow,
    "INSUFFICIENT_CONFIRMATIONS": InsufficientConfirmations,
    "TX_TOO_OLD": TxTooOld,
}


def error_for(
    status: int,
    body: dict[str, Any],
    retry_after: float | None = None,
    *,
    headers: dict[str, str] | None = None,
    verification: bool = False,
) -> X402Error:
    """The exception for an error answer (`verification`: a 200 whose proof did not verify)."""
    code = str(body.get("error_code") or "")
    message = str(body.get("error") or body.get("message") or f"HTTP {status}")
    cls = BY_CODE.get(code)
    if cls is None:
        if verification:
            cls = VerificationFailed
        elif status == 401:
            cls = X402AuthError
        elif status == 429:
            cls = X402QuotaExceeded if "quota" in message.lower() else RateLimited
        elif status >= 500:
            cls = ServiceUnavailable
        else:
            cls = X402APIError
    return cls(message, code=code, status=status, body=body, retry_after=retry_after, headers=headers)


def _when(v: object) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(v: object) -> int | None:
    try:
        return int(str(v)) if v is not None else None
    except ValueError:
        return None
