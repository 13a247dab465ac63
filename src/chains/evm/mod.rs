//! EVM chains: USDC's EIP-3009 `transferWithAuthorization`, verified offline with alloy, simulated
//! with one `eth_call`, and settled by tollgate's relayer key.

pub mod batch;
pub mod eip3009;
mod proof;
pub mod receipts;
pub mod relayer;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::ClientBuilder;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolCall, SolError, SolEvent};
use alloy::transports::{RpcError, TransportError};
use async_trait::async_trait;

use batch::{BatchOptions, Batcher};
use eip3009::IUsdc;
pub use eip3009::{CheckedTransfer, Domain};
use receipts::ReceiptWatcher;
use relayer::{Relayer, SendError};

use super::{Chain, ChainError, ChainStatus, Checked, Rejection, SettleOutcome};
use crate::x402::AmountMatch;
use crate::x402::{reason, ExactEvmPayload, Network, Offer, PaymentPayload};

/// How an EVM network is reached and settled on.
#[derive(Debug, Clone)]
pub struct EvmOptions {
    pub rpc_url: String,
    pub rpc_timeout: Duration,
    pub gas_limit: u64,
    pub confirmations: u64,
    pub receipt_timeout: Duration,
    pub receipt_poll: Duration,
    /// Most payments per settlement transaction (1: never batch).
    pub max_batch: usize,
    /// How long a busy gateway lets a batch gather.
    pub batch_window: Duration,
    /// The chain's block interval (zero: unknown; batches go out as they form).
    pub block_time: Duration,
}

/// One EVM network: offline checks, the RPC, and (with a key) the relayer.
pub struct EvmChain {
    network: Arc<Network>,
    domain: Domain,
    provider: RootProvider,
    /// The RPC endpoint without path or query (which often carry API keys), for messages.
    rpc_label: String,
    /// The relayer keys (none: settlement unavailable; several: batches spread over them).
    relayers: Vec<Arc<Relayer>>,
    batcher: Option<Batcher>,
    /// Why there is no relayer, as an instruction.
    no_relayer: String,
    receipts: Arc<ReceiptWatcher>,
    receipt_timeout: Duration,
    confirmations: u64,
}

impl std::fmt::Debug for EvmChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmChain")
            .field("network", &self.network.name)
            .field("rpc", &self.rpc_label)
            .finish()
    }
}

impl EvmChain {
    /// Builds the chain without contacting it: a first run works offline.
    /// `relayers` is `Err(what to configure)` when no key is set.
    pub fn new(
        network: Arc<Network>,
        opts: EvmOptions,
        relayers: Result<Vec<Relayer>, String>,
    ) -> Result<EvmChain, String> {
        let asset: Address = network
            .asset
            .parse()
            .map_err(|_| format!("networks.{}.usdc is not an address", network.name))?;
        let domain = Domain::new(&network.eip712_name, &network.eip712_version, network.chain_id, asset);
        let url: url::Url = opts
            .rpc_url
            .parse()
            .map_err(|_| format!("networks.{}.rpc_url is not a URL", network.name))?;
        let rpc_label = crate::redact::url(&url);
        let http = reqwest::Client::builder()
            .timeout(opts.rpc_timeout)
            .connect_timeout(opts.rpc_timeout.min(Duration::from_secs(3)))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("cannot build the HTTP client for networks.{}: {e}", network.name))?;
        let client = ClientBuilder::default().http_with_client(http, url);
        let provider = RootProvider::new(client);
        let (relayers, no_relayer) = match relayers {
            Ok(r) if !r.is_empty() => (r.into_iter().map(Arc::new).collect::<Vec<_>>(), String::new()),
            Ok(_) => (Vec::new(), "the relayer key is empty".to_string()),
            Err(why) => (Vec::new(), why),
        };
        let receipts = ReceiptWatcher::new(provider.clone(), opts.receipt_poll);
        let batcher = (!relayers.is_empty()).then(|| {
            let o = BatchOptions {
                network: network.name.clone(),
                asset,
                gas_per_transfer: opts.gas_limit,
                max_batch: opts.max_batch,
                window: opts.batch_window,
                block_time: opts.block_time,
                receipt_timeout: opts.receipt_timeout,
                confirmations: opts.confirmations,
            };
            Batcher::new(provider.clone(), relayers.clone(), receipts.clone(), o)
        });
        Ok(EvmChain {
            network,
            domain,
            provider,
            rpc_label,
            relayers,
            batcher,
            no_relayer,
            receipts,
            receipt_timeout: opts.receipt_timeout,
            confirmations: opts.confirmations,
        })
    }

    /// The first relayer's address (the one simulations are made from).
    pub fn relayer_address(&self) -> Option<Address> {
        self.relayers.first().map(|r| r.address())
    }

    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    fn unreachable(&self, what: &str, e: impl std::fmt::Display) -> ChainError {
        super::unreachable(&self.network, &self.rpc_label, what, e)
    }

    fn transfer(c: &Checked) -> &CheckedTransfer {
        match c {
            Checked::Evm(t) => t,
            // Each network's chain checks its own payments: a Solana one never reaches EVM.
            #[cfg(feature = "solana")]
            Checked::Solana(_) => unreachable!("a Solana payment reached an EVM chain"),
        }
    }

    /// The receipt must be a success with USDC's `Transfer(from, to, value)` in it.
    fn check_receipt(&self, r: &TransactionReceipt, t: &CheckedTransfer) -> Result<(), Rejection> {
        let tx = r.transaction_hash;
        if !r.status() {
            return Err(Rejection::new(
                reason::UNEXPECTED_SETTLE,
                format!("transfer transaction {tx} reverted"),
            ));
        }
        // In a batch the transaction succeeds even when one transfer in it failed: this payment's own
        // AuthorizationUsed(from, nonce) and Transfer(from, to, value) must be there.
        let logs = r.inner.logs();
        let ours = |log: &&alloy::rpc::types::Log| log.address() == self.domain.asset;
        let used = logs.iter().filter(ours).any(|log| {
            IUsdc::AuthorizationUsed::decode_log(&log.inner)
                .is_ok_and(|ev| ev.authorizer == t.auth.from && ev.nonce == t.auth.nonce)
        });
        let moved = logs.iter().filter(ours).any(|log| {
            IUsdc::Transfer::decode_log(&log.inner)
                .is_ok_and(|ev| ev.from == t.auth.from && ev.to == t.auth.to && ev.value == t.auth.value)
        });
        if !(used && moved) {
            return Err(Rejection::new(
                reason::UNEXPECTED_SETTLE,
                format!("the transfer failed on chain: transaction {tx} has no AuthorizationUsed and Transfer for it"),
            ));
        }
        Ok(())
    }
}

/// Maps a USDC revert to the x402 reason it means.
fn revert_reason(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("exceeds balance") || m.contains("insufficient balance") {
        reason::INSUFFICIENT_FUNDS
    } else if m.contains("authorization is used") || m.contains("used or canceled") {
        reason::NONCE_USED
    } else if m.contains("invalid signature") {
        reason::INVALID_SIGNATURE
    } else if m.contains("not yet valid") {
        reason::VALID_AFTER
    } else if m.contains("authorization is expired") {
        reason::VALID_BEFORE
    } else if m.contains("blacklisted") {
        reason::PAYER_BLOCKED
    } else {
        reason::INVALID_PAYLOAD
    }
}

/// The revert text of a failed `eth_call`, if the node reported a revert at all.
fn revert_text(e: &TransportError) -> Option<String> {
    let RpcError::ErrorResp(p) = e else {
        return None;
    };
    if let Some(data) = p.as_revert_data() {
        if let Ok(r) = alloy::sol_types::Revert::abi_decode(&data) {
            return Some(r.reason);
        }
    }
    let m = p.message.to_ascii_lowercase();
    (m.contains("revert") || p.code == 3).then(|| p.message.to_string())
}

#[async_trait]
impl Chain for EvmChain {
    fn network(&self) -> &Arc<Network> {
        &self.network
    }

    fn check_offline(
        &self,
        offer: &Offer,
        amount: AmountMatch,
        payment: &PaymentPayload,
        now: u64,
    ) -> Result<Checked, Rejection> {
        let payload: ExactEvmPayload = serde_json::from_str(payment.payload.get()).map_err(|e| {
            Rejection::new(
                reason::INVALID_PAYLOAD,
                format!("payload is not an EIP-3009 authorization with a signature: {e}"),
            )
        })?;
        let pay_to: Address = offer
            .pay_to
            .parse()
            .map_err(|_| Rejection::new(reason::UNEXPECTED_VERIFY, "route payTo is not an address"))?;
        eip3009::check(&self.domain, pay_to, offer.amount, amount, &payload, now)
            .map(Checked::Evm)
            .map_err(|r| r.with_payer(payload.authorization.from.to_checksum(None)))
    }

    fn from_stored(&self, stored: &str) -> Result<Checked, String> {
        let p: ExactEvmPayload = serde_json::from_str(stored).map_err(|e| e.to_string())?;
        let signature = alloy::primitives::Signature::from_raw(&p.signature).map_err(|e| e.to_string())?;
        Ok(Checked::Evm(CheckedTransfer {
            auth: p.authorization,
            signature,
        }))
    }

    fn settle_unavailable(&self) -> Option<String> {
        self.relayers.is_empty().then(|| self.no_relayer.clone())
    }

    async fn check_onchain(&self, c: &Checked) -> Result<(), ChainError> {
        let t = Self::transfer(c);
        let from = self.relayer_address().unwrap_or(t.auth.to);
        let req = TransactionRequest::default()
            .from(from)
            .to(self.domain.asset)
            .input(Bytes::from(t.calldata()).into());
        // Against the latest block, named: nodes differ when it is left out (geth: latest; anvil:
        // its pending block, re-executing its whole pool for each call, 2-3x the cost per check
        // while a batch waits for its block). A payer's own transfer still in the mempool is seen
        // by the batch's simulation before anything is sent (on Base the mempool is private anyway).
        match self.provider.call(req).latest().await {
            Ok(_) => Ok(()),
            Err(e) => match revert_text(&e) {
                Some(text) => {
                    // The contract's own reason ("FiatTokenV2: invalid signature"), bounded.
                    let text: String = crate::redact::text(&text).chars().take(160).collect();
                    Err(Rejection::new(revert_reason(&text), format!("USDC would refuse this transfer: {text}")).into())
                }
                None => Err(self.unreachable("the balance and authorization check", e)),
            },
        }
    }

    async fn settle_reporting(
        &self,
        c: &Checked,
        sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError> {
        let t = Self::transfer(c);
        let Some(batcher) = &self.batcher else {
            return Err(ChainError::Unavailable(self.no_relayer.clone()));
        };
        let landed = match batcher.settle(t.calldata().into(), sent).await {
            Ok(l) => l,
            Err(SendError::OutOfGas { address, detail }) => {
                tracing::error!(network = %self.network.name, relayer = %address, detail = %crate::redact::text(&detail), "relayer is out of gas: fund it with the chain's native token; paid requests get 503 until then");
                return Err(ChainError::Unavailable(format!(
                    "payments on {} are paused (the operator's relayer needs funds); nothing was charged",
                    self.network.name
                )));
            }
            Err(SendError::Refused(why)) => {
                // The node's own words stay in the log; the client gets the x402 reason.
                tracing::warn!(network = %self.network.name, why = %crate::redact::text(&why), "the node refused a settlement");
                let r = revert_reason(&why);
                return Err(
                    Rejection::new(r, format!("the {} node refused the transfer ({r})", self.network.name)).into(),
                );
            }
            Err(SendError::InDoubt { hash, detail }) => {
                tracing::warn!(network = %self.network.name, tx = %hash, error = %crate::redact::text(&detail), "the node went away while a settlement was sent; recorded pending");
                return Err(ChainError::InDoubt {
                    tx: Some(hash.to_string()),
                    detail: format!("the {} node went away while the transfer was sent", self.network.name),
                });
            }
            Err(SendError::Unreachable(e)) => return Err(self.unreachable("settlement", e)),
            Err(SendError::WouldRevert(text)) => {
                // The batch's simulation: nothing was sent for this payment.
                let text: String = crate::redact::text(&text).chars().take(160).collect();
                return Err(
                    Rejection::new(revert_reason(&text), format!("USDC would refuse this transfer: {text}")).into(),
                );
            }
        };
        let tx = landed.tx.to_string();
        match landed.receipt {
            Some(r) => {
                self.check_receipt(&r, t)?;
                let gas = r.gas_used / landed.batch_size.max(1) as u64;
                let m = &crate::metrics::METRICS;
                if m.enabled() {
                    let net = [self.network.name.as_str()];
                    m.batch_size.with_label_values(&net).observe(landed.batch_size as f64);
                    m.gas_per_payment.with_label_values(&net).observe(gas as f64);
                }
                Ok(SettleOutcome::Settled { tx, gas })
            }
            None => {
                tracing::warn!(network = %self.network.name, %tx, "no receipt within the receipt timeout; recorded as pending");
                // If the node is not mining it because of a nonce gap, the next send closes the gap.
                landed.relayer.resync().await;
                Ok(SettleOutcome::Pending { tx })
            }
        }
    }

    async fn await_sent(&self, c: &Checked, tx: &str) -> Result<SettleOutcome, ChainError> {
        let t = Self::transfer(c);
        let h: B256 = tx
            .parse()
            .map_err(|_| ChainError::Unavailable(format!("'{tx}' is not a transaction hash")))?;
        let rx = self.receipts.expect(h);
        match self
            .receipts
            .wait(h, rx, self.receipt_timeout, self.confirmations)
            .await
        {
            Some(r) => {
                self.check_receipt(&r, t)?;
                // Its share: the transaction's gas over the authorizations it spent.
                let spent = r
                    .inner
                    .logs()
                    .iter()
                    .filter(|l| l.topics().first() == Some(&IUsdc::AuthorizationUsed::SIGNATURE_HASH))
                    .count();
                Ok(SettleOutcome::Settled {
                    tx: tx.to_string(),
                    gas: r.gas_used / spent.max(1) as u64,
                })
            }
            None => Ok(SettleOutcome::Pending { tx: tx.to_string() }),
        }
    }

    fn simulates_settlements(&self) -> bool {
        self.batcher.is_some()
    }

    fn settling_soon(&self) -> Option<Box<dyn std::any::Any + Send>> {
        self.batcher
            .as_ref()
            .map(|b| Box::new(b.coming()) as Box<dyn std::any::Any + Send>)
    }

    fn signer(&self) -> Option<String> {
        self.relayer_address().map(|a| a.to_checksum(None))
    }

    fn signers(&self) -> Vec<String> {
        self.relayers.iter().map(|r| r.address().to_checksum(None)).collect()
    }

    /// Every relayer key must hold gas; the metric shows the poorest one's balance.
    async fn check_signer_funds(&self) -> Option<Result<(), String>> {
        if self.relayers.is_empty() {
            return None;
        }
        let net = &self.network.name;
        let mut poorest: Option<u64> = None;
        let mut empty = Vec::new();
        for r in &self.relayers {
            let a = r.address();
            let Ok(wei) = self.provider.get_balance(a).await else {
                return Some(Err(format!(
                    "the relayer's balance cannot be read; check networks.{net}.rpc_url"
                )));
            };
            let w: u64 = wei.try_into().unwrap_or(u64::MAX);
            poorest = Some(poorest.map_or(w, |p| p.min(w)));
            if wei.is_zero() {
                empty.push(a);
            }
        }
        if let Some(w) = poorest {
            crate::metrics::METRICS
                .signer_balance
                .with_label_values(&[net])
                .set(w.min(i64::MAX as u64) as i64);
        }
        // Settlements go out from any key with gas: the network is unready only when none has
        // any (an empty key among several shows in tollgate_signer_balance and in the log).
        if empty.len() == self.relayers.len() {
            let which = match empty.as_slice() {
                [one] => format!("the relayer {one} holds no gas"),
                _ => format!("none of the {} relayer keys holds any gas", empty.len()),
            };
            return Some(Err(format!("{which} on {net}: fund it with the chain's native token")));
        }
        for a in empty {
            tracing::warn!(network = %net, relayer = %a, "a relayer key holds no gas: fund it with the chain's native token; the other keys send its share until then");
        }
        Some(Ok(()))
    }

    /// Transactions the node holds unmined, over all relayer keys.
    async fn pending_sends(&self) -> Option<u64> {
        let mut total = 0;
        for r in &self.relayers {
            let a = r.address();
            let (pending, mined) = tokio::join!(
                self.provider.get_transaction_count(a).pending(),
                self.provider.get_transaction_count(a).latest()
            );
            total += pending.ok()?.saturating_sub(mined.ok()?);
        }
        (!self.relayers.is_empty()).then_some(total)
    }

    async fn ping(&self) -> Result<(), String> {
        self.provider.get_block_number().await.map(|_| ()).map_err(|_| {
            format!(
                "the {} RPC does not answer (networks.{}.rpc_url)",
                self.network.name, self.network.name
            )
        })
    }

    async fn proof(&self, tx: &str, pay_to: &str) -> Result<super::Proof, super::ProofError> {
        self.evm_proof(tx, pay_to).await
    }

    async fn status(&self, c: &Checked, tx: Option<&str>, now: u64) -> Result<ChainStatus, ChainError> {
        let t = Self::transfer(c);
        if let Some(h) = tx.and_then(|s| s.parse::<B256>().ok()) {
            match self.provider.get_transaction_receipt(h).await {
                Ok(Some(r)) if self.check_receipt(&r, t).is_ok() => {
                    return Ok(ChainStatus::Spent {
                        tx: Some(h.to_string()),
                    })
                }
                Ok(Some(_)) => {}
                // Not in a block: still in the node's pool (in flight), or dropped from it.
                Ok(None) => match self.provider.get_transaction_by_hash(h).await {
                    Ok(Some(p)) if p.block_number.is_none() => return Ok(ChainStatus::InFlight { tx: h.to_string() }),
                    Ok(_) => {}
                    Err(e) => return Err(self.unreachable("reconciliation", e)),
                },
                Err(e) => return Err(self.unreachable("reconciliation", e)),
            }
        }
        let call = IUsdc::authorizationStateCall {
            authorizer: t.auth.from,
            nonce: t.auth.nonce,
        };
        let req = TransactionRequest::default()
            .to(self.domain.asset)
            .input(Bytes::from(call.abi_encode()).into());
        // Mined state only: a transfer still in the node's mempool is not spent yet (anvil, for one,
        // answers calls without a block from its pending state).
        let out = self
            .provider
            .call(req)
            .block(alloy::eips::BlockId::latest())
            .await
            .map_err(|e| self.unreachable("reconciliation", e))?;
        let used = IUsdc::authorizationStateCall::abi_decode_returns(&out)
            .map_err(|e| self.unreachable("reconciliation", e))?;
        Ok(if used {
            ChainStatus::Spent {
                tx: self.spending_tx(t).await,
            }
        } else if t.auth.valid_before <= now {
            ChainStatus::Expired
        } else {
            ChainStatus::Unspent
        })
    }
}

/// How far back [`EvmChain::spending_tx`] looks (an authorization lives minutes, not days; many
/// RPC providers cap log queries at a few thousand blocks).
const SPENT_LOOKBACK_BLOCKS: u64 = 2_000;

impl EvmChain {
    /// The transaction that spent an authorization whose transaction tollgate does not know (a
    /// facilitator that never said, a crash mid-send): its `AuthorizationUsed(from, nonce)` log.
    async fn spending_tx(&self, t: &CheckedTransfer) -> Option<String> {
        let head = self.provider.get_block_number().await.ok()?;
        let filter = alloy::rpc::types::Filter::new()
            .address(self.domain.asset)
            .event_signature(IUsdc::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(t.auth.from.into_word())
            .topic2(t.auth.nonce)
            .from_block(head.saturating_sub(SPENT_LOOKBACK_BLOCKS))
            .to_block(head);
        let logs = self.provider.get_logs(&filter).await.ok()?;
        logs.last()?.transaction_hash.map(|h| h.to_string())
    }
}

/// Reads USDC's balance of `who` (tests, examples and the CLI use it).
pub async fn usdc_balance(p: &RootProvider, asset: Address, who: Address) -> Result<U256, TransportError> {
    let call = IUsdc::balanceOfCall { account: who };
    let out = p
        .call(
            TransactionRequest::default()
                .to(asset)
                .input(Bytes::from(call.abi_encode()).into()),
        )
        .await?;
    Ok(IUsdc::balanceOfCall::abi_decode_returns(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usdc_reverts_map_to_x402_reasons() {
        assert_eq!(
            revert_reason("ERC20: transfer amount exceeds balance"),
            reason::INSUFFICIENT_FUNDS
        );
        assert_eq!(
            revert_reason("FiatTokenV2: authorization is used or canceled"),
            reason::NONCE_USED
        );
        assert_eq!(
            revert_reason("FiatTokenV2: invalid signature"),
            reason::INVALID_SIGNATURE
        );
        assert_eq!(
            revert_reason("FiatTokenV2: authorization is not yet valid"),
            reason::VALID_AFTER
        );
        assert_eq!(
            revert_reason("FiatTokenV2: authorization is expired"),
            reason::VALID_BEFORE
        );
        assert_eq!(
            revert_reason("Blacklistable: account is blacklisted"),
            reason::PAYER_BLOCKED
        );
        assert_eq!(revert_reason("Pausable: paused"), reason::INVALID_PAYLOAD);
    }
}
