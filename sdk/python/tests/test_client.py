"""The SDK against a real tollgate (SQLite and PostgreSQL) on anvil with Circle's USDC."""

from __future__ import annotations

import secrets
import time
from decimal import Decimal

import pytest

import tollgate_x402 as tg
from tollgate_x402 import X402Client

from .conftest import OTHER, PAYEE, Chain, Gateway


def new_tenant(gw: Gateway, tier: str = "free") -> tuple[str, str]:
    """A tenant on `tier` paid at PAYEE: its id and key."""
    with X402Client(base_url=gw.api, admin_key=gw.admin_key) as admin:
        created = admin.create_tenant(f"{secrets.token_hex(4)}@sdk.test", tier, "SDK test")
    assert created.api_key.startswith("x402_live_")
    with X402Client(created.api_key, gw.api) as c:
        c.update_tenant(pay_to_evm=PAYEE)
    return created.tenant.id, created.api_key


def test_the_contracts_flow(gateway: Gateway, chain: Chain) -> None:
    with X402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        created = admin.create_tenant("flow@sdk.test", "free", "Flow", slug=f"flow-{secrets.token_hex(3)}")
    assert created.tenant.tier == "free" and created.tenant.status == "active"
    assert "x402_live_" not in repr(created), "the key never shows in a repr"
    with X402Client(created.api_key, gateway.api, timeout=10) as client:
        client.update_tenant(pay_to_evm=PAYEE)
        usage = client.get_usage()
        assert (usage.tier, usage.verifications_used, usage.verifications_limit) == ("free", 0, 1000)
        assert usage.verifications_remaining == 1000 and not usage.unlimited
        assert usage.quota_reset_date is not None and usage.enabled_chains == ["base"]
        chains = client.get_supported_chains()
        assert chains.enabled_chains == ["base"] and set(chains.all_chains) == {"base", "ethereum"}

        # A real USDC transfer of 0.02 to the tenant's payee, proven.
        tx = chain.pay(PAYEE, 20_000)
        r = client.verify_payment(tx, "base", expected_amount="0.02")
        assert r.success and bool(r), r
        assert (r.tx_hash.lower(), r.chain, r.amount_atomic) == (tx.lower(), "base", 20_000)
        assert r.amount_usdc == Decimal("0.02")
        assert r.to_address is not None and r.to_address.lower() == PAYEE.lower()
        assert r.confirmations >= 1 and r.risk_score is not None and 0 <= r.risk_score <= 100
        assert client.get_usage().verifications_used == 1

        # The same transaction again: consumed, as a result and as an exception.
        again = client.verify_payment(tx, "base", expected_atomic=20_000)
        assert not again.success and again.error_code == "TX_ALREADY_USED"
        with pytest.raises(tg.TxAlreadyUsed) as e:
            again.raise_for_failure()
        assert e.value.first_used_at is not None and isinstance(e.value, tg.X402APIError)


def test_failed_proofs_map_to_their_exceptions(gateway: Gateway, chain: Chain) -> None:
    _, key = new_tenant(gateway)
    with X402Client(key, gateway.api) as c:
        low = chain.pay(PAYEE, 5_000)
        with pytest.raises(tg.AmountTooLow):
            c.verify_payment(low, "base", expected_amount=Decimal("0.01"), raise_on_failure=True)
        elsewhere = chain.pay(OTHER, 10_000)
        with pytest.raises(tg.WrongRecipient):
            c.verify_payment(elsewhere, "base", expected_amount="0.01", raise_on_failure=True)
        with pytest.raises(tg.TxNotFound):
            c.verify_payment("0x" + "ab" * 32, "base", raise_on_failure=True)
        # Not raised unless asked: the contract's result shape.
        r = c.verify_payment(low, "base", expected_amount="0.01")
        assert r.error_code == "AMOUNT_TOO_LOW" and isinstance(r.error_for(), tg.AmountTooLow)


def test_http_errors_map_to_their_exceptions(gateway: Gateway) -> None:
    tenant_id, key = new_tenant(gateway)
    with X402Client("x402_live_" + "1" * 30, gateway.api) as bad, pytest.raises(tg.X402AuthError) as e:
        bad.get_usage()
    assert (e.value.status, e.value.code) == (401, "INVALID_API_KEY")
    with X402Client(key, gateway.api) as c:
        with pytest.raises(tg.ChainNotEnabled) as ce:
            c.verify_payment("0x" + "cd" * 32, "ethereum")
        assert ce.value.status == 403
        with pytest.raises(tg.InvalidRequest) as ie:
            c.verify_payment("0x" + "cd" * 32, "base", expected_amount="0.0000001")
        assert "expected_amount" in ie.value.message
        with pytest.raises(tg.NotFound):
            c.revoke_key("key_doesnotexist")
        scoped = c.create_key("analytics only", ["analytics"])
        assert scoped.key.scopes == ["analytics"] and scoped.api_key.startswith("x402_live_")
    with X402Client(scoped.api_key, gateway.api) as only, pytest.raises(tg.InsufficientScope):
        only.verify_payment("0x" + "cd" * 32, "base")
    slug = f"taken-{secrets.token_hex(3)}"
    with X402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        admin.create_tenant("a@sdk.test", "free", slug=slug)
        with pytest.raises(tg.SlugTaken):
            admin.create_tenant("b@sdk.test", "free", slug=slug)
    with X402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        assert admin.suspend(tenant_id).status == "suspended"
        with X402Client(key, gateway.api) as c, pytest.raises(tg.TenantSuspended):
            c.get_usage()
        assert admin.resume(tenant_id).status == "active"
        assert admin.set_plan(tenant_id, "pro").tier == "pro"
        assert admin.tenant(tenant_id).tier == "pro"
        for i in range(3):
            admin.create_tenant(f"more{i}-{secrets.token_hex(3)}@sdk.test", "free")
        listed = [t.id for t in admin.list_tenants(page_size=2)]
        # At least five tenants now, so at least three pages of two, each tenant once.
        assert tenant_id in listed and len(listed) == len(set(listed)) and len(listed) >= 5
    with X402Client(key, gateway.api) as c:
        assert c.get_usage().tier == "pro"
    with X402Client(key, gateway.api) as c, pytest.raises(tg.X402Error) as e:
        c.list_tenants().__next__()
    assert "admin key" in str(e.value)


def test_quota_exceeded_carries_the_reset_and_the_upgrade_url_and_is_not_retried(
    gateway: Gateway, chain: Chain
) -> None:
    _, key = new_tenant(gateway, "tiny")
    with X402Client(key, gateway.api, max_retries=3) as c:
        assert c.verify_payment(chain.pay(PAYEE, 1_000), "base").success
        second = chain.pay(PAYEE, 1_000)
        started = time.monotonic()
        with pytest.raises(tg.X402QuotaExceeded) as e:
            c.verify_payment(second, "base")
        assert time.monotonic() - started < 2, "a monthly quota is not retried"
    q = e.value
    assert (q.status, q.code) == (429, "QUOTA_EXCEEDED")
    assert q.upgrade_url == "https://tollgate.test/upgrade"
    assert q.reset_at is not None and q.retry_after is not None and q.retry_after > 0


def test_rate_limits_are_retried_after_retry_after(gateway: Gateway) -> None:
    _, key = new_tenant(gateway, "limited")
    time.sleep(1.1)  # the bucket full again after the tenant's setup calls
    with X402Client(key, gateway.api, max_retries=0) as once:
        once.get_usage()
        once.get_usage()
        with pytest.raises(tg.RateLimited) as e:
            once.get_usage()
    assert e.value.retry_after is not None and 0 < e.value.retry_after <= 1
    assert e.value.limit == 2 and e.value.remaining == 0
    time.sleep(1.1)
    with X402Client(key, gateway.api, max_retries=3) as patient:
        started = time.monotonic()
        for _ in range(4):
            patient.get_usage()
        # Two at once, then each of the next two waited for its token (Retry-After: 1 s).
        assert time.monotonic() - started >= 0.9


def test_pagination_walks_every_page(gateway: Gateway) -> None:
    _, key = new_tenant(gateway)
    with X402Client(key, gateway.api) as c:
        for i in range(5):
            c.verify_payment("0x" + f"{i:02x}" * 32, "base")
        rows = list(c.verifications(page_size=2))
    assert len(rows) == 5 and len({r.id for r in rows}) == 5
    assert [r.at for r in rows] == sorted((r.at for r in rows), reverse=True)
    assert all(r.error_code == "TX_NOT_FOUND" and not r.success and r.chain == "base" for r in rows)


def test_keys_and_tenant_settings(gateway: Gateway) -> None:
    _, key = new_tenant(gateway)
    with X402Client(key, gateway.api) as c:
        made = c.create_key("ci")
        listed = {k.id: k for k in c.list_keys()}
        assert made.key.id in listed and listed[made.key.id].prefix.startswith("x402_live_")
        assert all(made.api_key not in repr(k) for k in listed.values())
        c.revoke_key(made.key.id)
        assert {k.id: k for k in c.list_keys()}[made.key.id].revoked_at is not None
        t = c.update_tenant(
            name="Renamed",
            upstream="http://127.0.0.1:9",
            routes=[{"method": "GET", "path": "/paid/*", "price": "$0.01"}],
        )
        assert t.name == "Renamed" and t.upstream == "http://127.0.0.1:9" and len(t.routes) == 1
        assert c.get_tenant().name == "Renamed"
        with pytest.raises(tg.InvalidRequest):
            c.update_tenant(routes=[{"path": "/x", "price": "$0.0x"}])
    time.sleep(1.1)  # the revocation reaches the key cache
    with X402Client(made.api_key, gateway.api) as revoked, pytest.raises(tg.X402AuthError):
        revoked.get_usage()


def test_money_helpers() -> None:
    assert tg.usdc(10_000) == Decimal("0.01") and tg.atomic("0.01") == 10_000 and tg.atomic(Decimal("1.5")) == 1_500_000
    with pytest.raises(ValueError):
        tg.atomic("0.0000001")


def test_an_unreachable_gateway_is_an_error_that_says_so() -> None:
    with (
        X402Client("x402_live_x", "http://127.0.0.1:9", max_retries=1, backoff=0.01) as c,
        pytest.raises(tg.X402Error) as e,
    ):
        c.get_usage()
    assert "did not answer" in str(e.value)


def test_the_example_runs_the_contracts_flow(gateway: Gateway, chain: Chain) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "contract_flow.py"
    out = subprocess.run(
        [sys.executable, str(example), gateway.api, chain.pay(PAYEE, 10_000), PAYEE],
        env={**os.environ, "TOLLGATE_ADMIN_KEY": gateway.admin_key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "free: 0/1000" in out.stdout and "chains: base" in out.stdout, out.stdout
    assert "\npaid\n" in out.stdout, out.stdout
