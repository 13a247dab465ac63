"""Error mapping and the retry policy, without a server (the live tests cover the codes tollgate can be
made to answer; this covers every code the SDK knows, and the policy's edges)."""

from __future__ import annotations

import httpx
import pytest

import tollgate_x402 as tg
from tollgate_x402 import _core
from tollgate_x402.errors import BY_CODE, error_for

CONTRACT = {
    "INVALID_API_KEY": tg.X402AuthError,
    "QUOTA_EXCEEDED": tg.X402QuotaExceeded,
    "GAS_BUDGET_EXCEEDED": tg.X402QuotaExceeded,
}


@pytest.mark.parametrize("code", sorted(BY_CODE))
def test_every_code_has_its_class_under_the_contracts_three(code: str) -> None:
    e = error_for(400, {"success": False, "error": "why", "error_code": code})
    assert type(e) is BY_CODE[code] and e.code == code and e.message == "why"
    base = CONTRACT.get(code, tg.X402APIError)
    assert isinstance(e, base) and isinstance(e, tg.X402Error)


def test_unknown_codes_fall_back_by_status() -> None:
    assert type(error_for(401, {"error": "x"})) is tg.X402AuthError
    assert type(error_for(418, {"error": "x", "error_code": "NEW_THING"})) is tg.X402APIError
    assert type(error_for(502, {})) is tg.ServiceUnavailable
    assert type(error_for(200, {"error_code": "NEW_PROOF_CODE"}, verification=True)) is tg.VerificationFailed


def response(status: int, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def settings(**kw: float) -> _core.Settings:
    s = _core.Settings(None, "http://x", 5, 3, 30, 0.25, None)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_retry_policy() -> None:
    limited = _core.outcome(response(429, {"error_code": "RATE_LIMITED", "error": "slow"}, **{"retry-after": "2"}))
    assert isinstance(limited, tg.RateLimited) and limited.retry_after == 2
    assert _core.delay(limited, 0, settings()) == 2
    assert _core.delay(limited, 3, settings()) is None, "at most max_retries"
    assert _core.delay(limited, 0, settings(max_retry_wait=1)) is None, "a longer wait is raised at once"
    quota = _core.outcome(response(429, {"error_code": "QUOTA_EXCEEDED"}, **{"retry-after": "5"}))
    assert _core.delay(quota, 0, settings()) is None, "a monthly allowance is not retried"
    down = _core.outcome(response(503, {"error_code": "SERVICE_UNAVAILABLE"}))
    wait = _core.delay(down, 1, settings())
    assert wait is not None and 0.25 <= wait <= 0.75, "backoff without Retry-After"
    bad = _core.outcome(response(400, {"error_code": "INVALID_REQUEST"}))
    assert _core.delay(bad, 0, settings()) is None
    assert _core.outcome(response(200, {"ok": True})) == {"ok": True}


def test_expected_amounts_are_sent_as_decimal_strings() -> None:
    assert _core.expected(0.1, None) == "0.1"
    assert _core.expected(None, 10_000) == "0.010000"
    with pytest.raises(ValueError):
        _core.expected("0.1", 100_000)
