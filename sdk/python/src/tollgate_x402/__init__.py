"""Python client for tollgate's hosted x402 API.

    from tollgate_x402 import X402Client

    with X402Client(api_key="x402_live_…", base_url="https://api.tollgate.example") as client:
        result = client.verify_payment("0xabc…", "base", expected_amount="0.01")

The contract's names are kept (`X402Client`, `X402AuthError`, `X402QuotaExceeded`, `X402APIError`):
code written for it ports by changing its import to `tollgate_x402`.
"""

from ._core import __version__
from .client import AsyncX402Client, X402Client
from .errors import (
    AmountTooLow,
    ChainNotEnabled,
    ChainUnavailable,
    GasBudgetExceeded,
    InsufficientConfirmations,
    InsufficientScope,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    SlugTaken,
    TenantSuspended,
    TxAlreadyUsed,
    TxFailed,
    TxNotFound,
    TxTooOld,
    VerificationFailed,
    WrongRecipient,
    X402APIError,
    X402AuthError,
    X402Error,
    X402QuotaExceeded,
)
from .facilitator import facilitator_config
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
    atomic,
    usdc,
)

__all__ = [
    "AmountTooLow",
    "ApiKey",
    "AsyncX402Client",
    "ChainNotEnabled",
    "ChainUnavailable",
    "CreatedKey",
    "CreatedTenant",
    "GasBudgetExceeded",
    "InsufficientConfirmations",
    "InsufficientScope",
    "InvalidRequest",
    "NotFound",
    "Payment",
    "RateLimited",
    "ServiceUnavailable",
    "SettleResult",
    "SlugTaken",
    "SupportedChains",
    "Tenant",
    "TenantSuspended",
    "TxAlreadyUsed",
    "TxFailed",
    "TxNotFound",
    "TxTooOld",
    "Usage",
    "Verification",
    "VerificationFailed",
    "VerifyResult",
    "WrongRecipient",
    "X402APIError",
    "X402AuthError",
    "X402Client",
    "X402Error",
    "X402QuotaExceeded",
    "X402VerifyResult",
    "__version__",
    "atomic",
    "facilitator_config",
    "usdc",
]
