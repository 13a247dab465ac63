//! Chain families behind one trait: verify a payment offline, check it on chain, settle it.
//!
//! EVM (EIP-3009 USDC) is [`evm`]; Solana's `exact` scheme is [`solana`] (the `solana` feature).

pub mod evm;
#[cfg(feature = "solana")]
pub mod solana;

use std::sync::Arc;

use async_trait::async_trait;

use crate::x402::AmountMatch;
use crate::x402::{Network, Offer, PaymentPayload};

/// A failed check: the client's payment is not acceptable. Answered with 402 and the x402 reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Rejection {
    /// The x402 reason string (`insufficient_funds`, …); a facilitator may send its own.
    pub reason: std::borrow::Cow<'static, str>,
    /// What exactly was wrong, for the client and the records.
    pub detail: String,
    /// Who the payment claims to be from, when that could be read.
    pub payer: Option<String>,
}

impl Rejection {
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            detail: detail.into(),
            payer: None,
        }
    }

    /// Names the payer the payment claims (`authorization.from`), as x402 answers do.
    pub fn with_payer(mut self, payer: String) -> Self {
        self.payer = Some(payer);
        self
    }
}

/// What can stop a chain step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The payment is at fault (402).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Tollgate cannot reach or use the chain right now (503); nothing is charged.
    #[error("{0}")]
    Unavailable(String),
    /// The outcome is unknown: a transaction may have been sent (the node or the facilitator went
    /// away mid-send, or answered badly). Recorded pending (under `tx` when known) and reconciled
    /// from the chain; the client is told "pending", never "nothing charged".
    #[error("{detail}")]
    InDoubt { tx: Option<String>, detail: String },
}

/// A chain's RPC failed: the detail goes to the log (URLs cut to their host: `rpc_label`), the
/// client learns only which network is unavailable, and that nothing was charged.
pub(crate) fn unreachable(network: &Network, rpc_label: &str, what: &str, e: impl std::fmt::Display) -> ChainError {
    let m = &crate::metrics::METRICS;
    if m.enabled() {
        m.rpc_errors.with_label_values(&[&network.name]).inc();
    }
    tracing::warn!(
        network = %network.name,
        rpc = %rpc_label,
        error = %crate::redact::text(&e.to_string()),
        "chain RPC failed during {what}; check networks.{}.rpc_url",
        network.name
    );
    ChainError::Unavailable(format!(
        "the {} network cannot be reached right now; nothing was charged, try again later",
        network.name
    ))
}

/// The unique identity of a payment authorization: it may be spent once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplayKey {
    /// CAIP-2 network id.
    pub network: String,
    pub asset: String,
    pub payer: String,
    pub nonce: String,
}

/// A payment that passed the offline checks, in its chain family's terms.
#[derive(Debug, Clone)]
pub enum Checked {
    Evm(evm::CheckedTransfer),
    #[cfg(feature = "solana")]
    Solana(Box<solana::CheckedSolTransfer>),
}

impl Checked {
    pub fn payer(&self) -> String {
        match self {
            Checked::Evm(t) => t.auth.from.to_checksum(None),
            #[cfg(feature = "solana")]
            Checked::Solana(t) => t.authority.to_string(),
        }
    }
    pub fn amount(&self) -> alloy::primitives::U256 {
        match self {
            Checked::Evm(t) => t.auth.value,
            #[cfg(feature = "solana")]
            Checked::Solana(t) => alloy::primitives::U256::from(t.amount),
        }
    }
    /// EVM: (payer, EIP-3009 nonce). Solana: (transfer authority, SHA-256 of the message), so
    /// that a re-signed copy of one message is the same payment.
    pub fn replay_key(&self, network: &Network) -> ReplayKey {
        match self {
            Checked::Evm(t) => ReplayKey {
                network: network.caip2.clone(),
                asset: network.asset.to_ascii_lowercase(),
                payer: t.auth.from.to_checksum(None).to_ascii_lowercase(),
                nonce: t.auth.nonce.to_string(),
            },
            // Base58 is case-sensitive: kept as is.
            #[cfg(feature = "solana")]
            Checked::Solana(t) => ReplayKey {
                network: network.caip2.clone(),
                asset: network.asset.clone(),
                payer: t.authority.to_string(),
                nonce: t.message_hash(),
            },
        }
    }
    /// The last moment the authorization can be settled (unix seconds). Solana: an estimate from
    /// the claim's time (a blockhash lives about a minute); the chain decides expiry.
    pub fn valid_before(&self, now_secs: u64) -> u64 {
        match self {
            Checked::Evm(t) => {
                let _ = now_secs;
                t.auth.valid_before
            }
            #[cfg(feature = "solana")]
            Checked::Solana(_) => now_secs + solana::BLOCKHASH_LIFETIME_SECS,
        }
    }
    /// The scheme payload as stored, so that a crash can be reconciled from the database.
    pub fn to_stored(&self) -> String {
        match self {
            Checked::Evm(t) => serde_json::to_string(&t.to_payload()).expect("payload serializes"),
            #[cfg(feature = "solana")]
            Checked::Solana(t) => t.to_base64(),
        }
    }
}

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// On chain, confirmed.
    /// `gas`: this payment's share of the transaction's gas (0 when not known: found on chain
    /// later, or settled by a facilitator).
    Settled { tx: String, gas: u64 },
    /// Sent, but no receipt within the configured time: recorded as pending, reconciled later.
    Pending { tx: String },
    /// Answered before its settlement (a route's `answer = "verified"` or `"submitted"`): the
    /// settlement goes on in the background; `tx` is empty until the node has accepted it.
    Underway { tx: String },
}

impl SettleOutcome {
    /// The transaction; empty for a payment answered before its settlement was sent.
    pub fn tx(&self) -> &str {
        match self {
            SettleOutcome::Settled { tx, .. } | SettleOutcome::Pending { tx } | SettleOutcome::Underway { tx } => tx,
        }
    }
}

/// What the chain says about an authorization some time after it was claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    /// Spent on chain (by `tx` if known).
    Spent { tx: Option<String> },
    /// Not spent, and can no longer be (expired).
    Expired,
    /// Not spent yet; could still be.
    Unspent,
    /// A transaction sent for it is still waiting in the node's pool: not spent yet, and sending
    /// another would only race it.
    InFlight { tx: String },
}

/// A transfer found on chain for a proof of payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub tx: String,
    pub from: String,
    pub to: String,
    /// Atomic units of the network's USDC paid to `to` in the transaction.
    pub amount: alloy::primitives::U256,
    /// 1 = in the latest block.
    pub confirmations: u64,
    /// The block's time (unix seconds).
    pub block_time: u64,
}

/// Why a transaction is not a proof of payment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    Malformed(String),
    #[error("no mined transaction with this hash on this chain")]
    NotFound,
    #[error("the transaction reverted")]
    Reverted,
    #[error("the transaction moves no USDC to this tenant's payTo address")]
    NoTransfer,
    #[error("{0}")]
    Unavailable(String),
    #[error("proofs are not supported on this chain yet")]
    Unsupported,
}

/// One chain family's verifier and settler for one network.
#[async_trait]
pub trait Chain: Send + Sync {
    fn network(&self) -> &Arc<Network>;

    /// Offline checks against the route's own offer (never the requirement the client sent back):
    /// recipient, time window, amount, signature.
    fn check_offline(
        &self,
        offer: &Offer,
        amount: AmountMatch,
        payment: &PaymentPayload,
        now_secs: u64,
    ) -> Result<Checked, Rejection>;

    /// Rebuilds a checked payment from what [`Checked::to_stored`] wrote.
    fn from_stored(&self, stored: &str) -> Result<Checked, String>;

    /// `Some(what to configure)` when this process cannot settle here (no relayer key, …).
    fn settle_unavailable(&self) -> Option<String>;

    /// On-chain checks: balance and the authorization's state, in one simulation.
    async fn check_onchain(&self, c: &Checked) -> Result<(), ChainError>;

    /// Sends the transfer and waits (bounded) for its receipt.
    async fn settle(&self, c: &Checked) -> Result<SettleOutcome, ChainError> {
        self.settle_reporting(c, None).await
    }

    /// [`Self::settle`], telling `sent` the transaction's id as soon as the node accepted it (before
    /// the receipt). A chain that cannot tell drops `sent` unanswered: its payments are answered
    /// when they are confirmed.
    async fn settle_reporting(
        &self,
        c: &Checked,
        sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError>;

    /// Looks up what became of an authorization (and of `tx`, if one was sent).
    async fn status(&self, c: &Checked, tx: Option<&str>, now_secs: u64) -> Result<ChainStatus, ChainError>;

    /// Waits (bounded, like [`Self::settle`]) for a transaction already sent for this payment:
    /// settled when it lands and moved this transfer, pending when it is still not in a block.
    async fn await_sent(&self, c: &Checked, tx: &str) -> Result<SettleOutcome, ChainError> {
        let _ = c;
        Ok(SettleOutcome::Pending { tx: tx.to_string() })
    }

    /// Whether [`Self::settle`] simulates each transfer before sending it (and refuses, unsent, one
    /// that would revert), so that a payment settled at once needs no [`Self::check_onchain`] first.
    fn simulates_settlements(&self) -> bool {
        false
    }

    /// Marks a payment whose settlement follows at once, until the returned guard is dropped (a
    /// batch being formed may wait for it).
    fn settling_soon(&self) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }

    /// The address that signs settlements here (the relayer), when there is one.
    fn signer(&self) -> Option<String> {
        None
    }

    /// Every address that signs settlements here (several relayer keys: all of them).
    fn signers(&self) -> Vec<String> {
        self.signer().into_iter().collect()
    }

    /// Checks whether the signer holds enough to pay for settlements (`None`: no signer here), and
    /// reports its balance in the metrics; logged at start, asked by readiness.
    async fn check_signer_funds(&self) -> Option<Result<(), String>> {
        None
    }

    /// The signer's transactions the node holds but has not mined (EVM: its pending nonce count
    /// minus its mined one); `None` where there is no such thing.
    async fn pending_sends(&self) -> Option<u64> {
        None
    }

    /// Whether the chain's RPC answers (readiness).
    async fn ping(&self) -> Result<(), String> {
        Ok(())
    }

    /// A payment already made: the USDC that transaction `tx` moved to `pay_to`.
    async fn proof(&self, _tx: &str, _pay_to: &str) -> Result<Proof, ProofError> {
        Err(ProofError::Unsupported)
    }
}
