"""The async client: the same calls, errors, retries and pages, awaited."""

from __future__ import annotations

import secrets
import time

import pytest

import tollgate_x402 as tg
from tollgate_x402 import AsyncX402Client

from .conftest import PAYEE, Chain, Gateway

pytestmark = pytest.mark.anyio


async def test_the_contracts_flow_async(gateway: Gateway, chain: Chain) -> None:
    async with AsyncX402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        created = await admin.create_tenant(f"{secrets.token_hex(4)}@sdk.test", "pro")
    async with AsyncX402Client(created.api_key, gateway.api) as c:
        await c.update_tenant(pay_to_evm=PAYEE)
        usage = await c.get_usage()
        assert (usage.tier, usage.verifications_limit) == ("pro", 100_000)
        assert set((await c.get_supported_chains()).enabled_chains) == {"base", "ethereum"}
        tx = chain.pay(PAYEE, 30_000)
        r = await c.verify_payment(tx, "base", expected_amount="0.03", raise_on_failure=True)
        assert r.amount_atomic == 30_000
        with pytest.raises(tg.TxAlreadyUsed):
            await c.verify_payment(tx, "base", raise_on_failure=True)
        for i in range(3):
            await c.verify_payment("0x" + f"{i + 16:02x}" * 32, "base")
        rows = [v async for v in c.verifications(page_size=2)]
        assert len(rows) == 5 and len({r.id for r in rows}) == 5
        assert sum(r.success for r in rows) == 1
    async with AsyncX402Client("x402_live_" + "2" * 30, gateway.api) as bad:
        with pytest.raises(tg.X402AuthError):
            await bad.get_usage()


async def test_rate_limits_are_retried_async(gateway: Gateway) -> None:
    async with AsyncX402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        created = await admin.create_tenant(f"{secrets.token_hex(4)}@sdk.test", "limited")
    time.sleep(1.1)
    async with AsyncX402Client(created.api_key, gateway.api, max_retries=0) as once:
        await once.get_usage()
        await once.get_usage()
        with pytest.raises(tg.RateLimited):
            await once.get_usage()
    time.sleep(1.1)
    async with AsyncX402Client(created.api_key, gateway.api, max_retries=3) as patient:
        started = time.monotonic()
        for _ in range(3):
            await patient.get_usage()
        assert time.monotonic() - started >= 0.4
