"""tollgate as the facilitator of the official x402 Python server middleware (FastAPI), paid by the
official x402 Python client (httpx), settled in real USDC on anvil."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import threading
import time

import pytest

from tollgate_x402 import X402Client, facilitator_config

from .conftest import JS, PAYEE, Chain, Gateway, free_port, wait_for

PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

pytestmark = pytest.mark.anyio


def usdc_of(chain: Chain, who: str) -> int:
    out = subprocess.run(
        ["node", str(JS / "usdc-chain.mjs"), "balance", chain.url, who], check=True, capture_output=True, text=True
    )
    return int(out.stdout.strip())


async def test_a_fastapi_app_with_x402_middleware_settles_through_tollgate(gateway: Gateway, chain: Chain) -> None:
    import uvicorn
    from eth_account import Account
    from fastapi import FastAPI
    from x402 import x402Client, x402ResourceServer
    from x402.http import HTTPFacilitatorClient
    from x402.http.clients import x402HttpxClient
    from x402.http.middleware.fastapi import payment_middleware
    from x402.http.types import PaymentOption, RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmScheme, ExactEvmServerScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    with X402Client(base_url=gateway.api, admin_key=gateway.admin_key) as admin:
        created = admin.create_tenant(f"{secrets.token_hex(4)}@fastapi.test", "free")
    with X402Client(created.api_key, gateway.api) as c:
        c.update_tenant(pay_to_evm=PAYEE)

    # The one-liner: x402's facilitator client pointed at tollgate with the tenant's key.
    server = x402ResourceServer(HTTPFacilitatorClient(facilitator_config(created.api_key, gateway.api)))
    server.register("eip155:8453", ExactEvmServerScheme())
    routes = {
        "GET /weather": RouteConfig(
            accepts=PaymentOption(scheme="exact", pay_to=PAYEE, price="$0.001", network="eip155:8453"),
            description="weather",
        )
    }
    app = FastAPI()

    @app.get("/weather")
    async def weather() -> dict[str, str]:
        return {"weather": "sunny"}

    app.middleware("http")(payment_middleware(routes, server))
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    try:
        wait_for(port, "the FastAPI app")
        before = usdc_of(chain, PAYEE)
        payer = x402Client()
        payer.register("eip155:*", ExactEvmScheme(signer=EthAccountSigner(Account.from_key(PAYER_KEY))))
        async with x402HttpxClient(payer, timeout=60) as http:
            r = await http.get(f"http://127.0.0.1:{port}/weather")
        assert r.status_code == 200, r.text
        assert r.json() == {"weather": "sunny"}
        assert r.headers.get("payment-response"), dict(r.headers)
        for _ in range(50):
            if usdc_of(chain, PAYEE) - before == 1_000:
                break
            await asyncio.sleep(0.1)
        assert usdc_of(chain, PAYEE) - before == 1_000, "0.001 USDC settled to the tenant's payee"
        # And tollgate counted it against the tenant.
        with X402Client(created.api_key, gateway.api) as c:
            assert c.get_usage().verifications_used >= 1
            paid = list(c.payments())
            assert len(paid) == 1 and paid[0].amount_atomic == 1_000 and paid[0].state == "settled", paid
            kinds = c.facilitator_supported()["kinds"]
            assert any(k.get("network") == "eip155:8453" for k in kinds), kinds
    finally:
        web.should_exit = True
        thread.join(timeout=10)
        time.sleep(0.1)
