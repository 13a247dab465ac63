"""Fixtures: a real tollgate (the binary `cargo test` built, hosted mode) on SQLite and on PostgreSQL, in
front of anvil running Circle's USDC (tests/js/usdc-chain.mjs, the same layout as the Rust tests)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
JS = ROOT / "tests" / "js"
ANVIL_BIN = JS / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
ADMIN = "sdk-test-admin-key-0123456789abcdef"
RELAYER_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
PAYEE = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
OTHER = "0x1000000000000000000000000000000000000a0a"
PG_ADMIN = os.environ.get("TOLLGATE_TEST_PG", "postgres://postgres@127.0.0.1:5432/test")


def tollgate_bin() -> Path:
    if os.environ.get("TOLLGATE_BIN"):
        return Path(os.environ["TOLLGATE_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "tollgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, what: str, log: Path | None = None) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start" + (f":\n{log.read_text()}" if log else ""))


@dataclass
class Chain:
    url: str

    def pay(self, to: str, amount: int) -> str:
        """A plain USDC transfer (atomic units) from anvil's owner to `to`, mined: its hash."""
        out = subprocess.run(
            ["node", str(JS / "usdc-chain.mjs"), "pay", self.url, to, str(amount)],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()


@pytest.fixture(scope="session")
def chain() -> Iterator[Chain]:
    if not ANVIL_BIN.exists():
        pytest.fail(f"{ANVIL_BIN} is missing: run scripts/test (it installs tests/js)")
    port = free_port()
    proc = subprocess.Popen(
        [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "8453", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port, "anvil")
        url = f"http://127.0.0.1:{port}"
        subprocess.run(["node", str(JS / "usdc-chain.mjs"), "setup", url], check=True, capture_output=True)
        yield Chain(url)
    finally:
        proc.terminate()
        proc.wait()


@dataclass
class Gateway:
    api: str
    proxy: str
    admin_key: str
    log: Path

    def admin(self, method: str, path: str) -> httpx.Response:
        return httpx.request(method, self.api + path, headers={"x-admin-key": self.admin_key})


PLANS = """
[plans.free]
verifications = 1000
chains = ["base"]

[plans.pro]
verifications = 100000
chains = ["*"]

# One verification a month: the second is over quota.
[plans.tiny]
verifications = 1
chains = ["base"]

# Two API calls a second per key: the third waits for Retry-After.
[plans.limited]
verifications = 1000
chains = ["base"]
rate_limits = { per_key = "2/s" }
"""


def _database(kind: str) -> tuple[str, str | None]:
    if kind == "sqlite":
        d = tempfile.mkdtemp(prefix="tollgate-sdk-")
        return f"sqlite://{d}/tollgate.db", None
    name = "tollgate_sdk_" + secrets.token_hex(5)
    subprocess.run(["psql", "-q", PG_ADMIN, "-c", f"CREATE DATABASE {name}"], check=True)
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, chain: Chain) -> Iterator[Gateway]:
    """A hosted tollgate on each database (every test that uses it runs on both)."""
    binary = tollgate_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build` first (scripts/test does), or set TOLLGATE_BIN")
    db, pg_name = _database(request.param)
    work = Path(tempfile.mkdtemp(prefix="tollgate-sdk-gw-"))
    port, api_port, mport = free_port(), free_port(), free_port()
    config = work / "tollgate.toml"
    config.write_text(
        f"""
listen = "127.0.0.1:{port}"
database = "{db}"
threads = 1

[api]
listen = "127.0.0.1:{api_port}"

[metrics]
listen = "127.0.0.1:{mport}"

[hosted]
path_prefix = true
allow_private_upstreams = true
upgrade_url = "https://tollgate.test/upgrade"
tenant_cache_secs = 1
key_cache_secs = 1

[settlement]
relayer_key_env = "TEST_RELAYER_KEY"
receipt_poll_ms = 20

[networks.base]
rpc_url = "{chain.url}"

# Configured, so that a plan without it can be refused it; never contacted.
[networks.ethereum]
rpc_url = "{chain.url}"
{PLANS}"""
    )
    log = work / "tollgate.log"
    env = {**os.environ, "TEST_RELAYER_KEY": RELAYER_KEY, "TOLLGATE_ADMIN_KEY": ADMIN, "TOLLGATE_LOG": "info"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for(api_port, "tollgate's management API", log)
        yield Gateway(api=f"http://127.0.0.1:{api_port}", proxy=f"http://127.0.0.1:{port}", admin_key=ADMIN, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if pg_name:
            subprocess.run(
                ["psql", "-q", PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"], check=False
            )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
