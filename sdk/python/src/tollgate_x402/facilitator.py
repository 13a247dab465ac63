"""Tollgate as the facilitator of the official `x402` Python server middleware (FastAPI, Flask).

    from x402.http import HTTPFacilitatorClient
    from tollgate_x402 import facilitator_config

    facilitator = HTTPFacilitatorClient(facilitator_config(api_key, "https://api.tollgate.example"))

The tenant's key goes in each call's `Authorization` header; settlements pay the tenant's own payTo
(whatever a requirement names), within its plan's chains and quota. Needs `pip install tollgate-x402[x402]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._core import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from x402.http import FacilitatorConfig


class _TenantKey:
    """x402's `AuthProvider`: the tenant's bearer key on every facilitator endpoint."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def get_auth_headers(self):  # type: ignore[no-untyped-def]  # x402's AuthHeaders, imported lazily
        from x402.http.facilitator_client_base import AuthHeaders

        h = {"Authorization": f"Bearer {self._api_key}"}
        return AuthHeaders(verify=dict(h), settle=dict(h), supported=dict(h), bazaar=dict(h))

    def __repr__(self) -> str:
        return "_TenantKey(<hidden>)"


def facilitator_config(api_key: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 30) -> FacilitatorConfig:
    """The `FacilitatorConfig` that points x402's `HTTPFacilitatorClient` at tollgate (`{base_url}/facilitator`)."""
    from x402.http import FacilitatorConfig

    return FacilitatorConfig(
        url=base_url.rstrip("/") + "/facilitator",
        timeout=timeout,
        auth_provider=_TenantKey(api_key),
        identifier="tollgate",
    )
