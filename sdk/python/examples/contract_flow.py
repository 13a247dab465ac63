"""The contract's flow against a running tollgate (hosted mode):

    TOLLGATE_ADMIN_KEY=… python examples/contract_flow.py http://127.0.0.1:8403 [TX_HASH PAY_TO]

creates a tenant with the admin key, reads its usage and chains, and (given the hash of a USDC transfer on
Base and the address it paid) sets that address as the tenant's payee and verifies the transfer.
"""

from __future__ import annotations

import os
import secrets
import sys

from tollgate_x402 import X402APIError, X402AuthError, X402Client, X402QuotaExceeded


def main() -> int:
    base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8403"
    with X402Client(base_url=base_url, admin_key=os.environ["TOLLGATE_ADMIN_KEY"]) as admin:
        created = admin.create_tenant(f"example-{secrets.token_hex(3)}@example.com", "free", "Example")
    print("tenant", created.tenant.id, "key (shown once):", created.api_key)
    try:
        with X402Client(created.api_key, base_url, timeout=30) as client:
            usage = client.get_usage()
            print(
                f"{usage.tier}: {usage.verifications_used}/{usage.verifications_limit}, resets {usage.quota_reset_date}"
            )
            print("chains:", ", ".join(client.get_supported_chains().enabled_chains))
            if len(sys.argv) > 3:
                client.update_tenant(pay_to_evm=sys.argv[3])
                result = client.verify_payment(sys.argv[2], "base", expected_amount="0.01")
                print("paid" if result.success else f"not paid: {result.error_code} {result.error}")
    except X402AuthError as e:
        print("bad key:", e)
        return 1
    except X402QuotaExceeded as e:
        print("quota used up until", e.reset_at, "upgrade:", e.upgrade_url)
        return 1
    except X402APIError as e:
        print("error:", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
