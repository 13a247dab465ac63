//! How verified payments reach the chain: the gateway's own relayer, or an external x402
//! facilitator. One trait, chosen once at start; the pipeline never asks which.

use async_trait::async_trait;

use super::Accepted;
use crate::chains::{Chain, ChainError, SettleOutcome};
use crate::facilitator::FacilitatorClient;
use crate::x402::{Resource, Version};

/// Verifies on chain and settles an accepted payment.
#[async_trait]
pub trait Settler: Send + Sync {
    /// Why this settler cannot take a payment on `chain` right now (no relayer key), if so.
    /// Asked before a payment is claimed, so that nothing is held for a settlement that cannot happen.
    fn unavailable(&self, chain: &dyn Chain) -> Option<String>;

    /// The on-chain check (balance, nonce unused, a simulated transfer). A failure charges nothing.
    async fn verify(&self, chain: &dyn Chain, a: &Accepted) -> Result<(), ChainError>;

    /// Whether settling checks the same as [`Self::verify`] before anything is sent, so that a
    /// payment settled at once may skip the separate check.
    fn settle_checks(&self, chain: &dyn Chain) -> bool;

    /// Sends the transfer. [`ChainError::InDoubt`] when it may have been sent and the outcome is
    /// unknown. `sent`, when given, is told the transaction as soon as the node accepted it (left
    /// unanswered by a settler that cannot tell).
    async fn settle(
        &self,
        chain: &dyn Chain,
        a: &Accepted,
        sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError>;

    /// Settles a payment from the ledger alone (its stored authorization), for reconciliation;
    /// `None` when this settler needs more than that (a facilitator wants the full requirements).
    async fn settle_stored(
        &self,
        chain: &dyn Chain,
        c: &crate::chains::Checked,
    ) -> Option<Result<SettleOutcome, ChainError>>;

    /// A short name for records and logs.
    fn name(&self) -> &'static str;
}

/// The gateway's own relayer key sends the transfers (nonce manager, batching: `chains::evm`).
pub struct Relayed;

#[async_trait]
impl Settler for Relayed {
    fn unavailable(&self, chain: &dyn Chain) -> Option<String> {
        chain.settle_unavailable()
    }

    async fn verify(&self, chain: &dyn Chain, a: &Accepted) -> Result<(), ChainError> {
        chain.check_onchain(&a.checked).await
    }

    fn settle_checks(&self, chain: &dyn Chain) -> bool {
        chain.simulates_settlements()
    }

    async fn settle(
        &self,
        chain: &dyn Chain,
        a: &Accepted,
        sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError> {
        chain.settle_reporting(&a.checked, sent).await
    }

    async fn settle_stored(
        &self,
        chain: &dyn Chain,
        c: &crate::chains::Checked,
    ) -> Option<Result<SettleOutcome, ChainError>> {
        Some(chain.settle(c).await)
    }

    fn name(&self) -> &'static str {
        "relayer"
    }
}

/// An external facilitator verifies and settles (`POST /verify`, `/settle`); the chain is still
/// read locally for the offline checks and for reconciliation.
pub struct Facilitated(pub FacilitatorClient);

impl Facilitated {
    /// The resource a v1 facilitator is told about: what the 402 named.
    fn resource(a: &Accepted) -> Resource<'_> {
        Resource {
            url: &a.asked.url,
            method: &a.asked.method,
            description: &a.pricing.description,
            mime_type: &a.pricing.mime_type,
        }
    }
}

#[async_trait]
impl Settler for Facilitated {
    fn unavailable(&self, _chain: &dyn Chain) -> Option<String> {
        None
    }

    fn settle_checks(&self, _chain: &dyn Chain) -> bool {
        false
    }

    async fn verify(&self, _chain: &dyn Chain, a: &Accepted) -> Result<(), ChainError> {
        match a.version {
            Version::V1 => self.0.verify(&a.payment, &a.offer.to_v1(&Self::resource(a))).await,
            Version::V2 => self.0.verify(&a.payment, &a.offer.to_v2()).await,
        }
    }

    async fn settle_stored(
        &self,
        _chain: &dyn Chain,
        _c: &crate::chains::Checked,
    ) -> Option<Result<SettleOutcome, ChainError>> {
        None
    }

    async fn settle(
        &self,
        _chain: &dyn Chain,
        a: &Accepted,
        _sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError> {
        let tx = match a.version {
            Version::V1 => self.0.settle(&a.payment, &a.offer.to_v1(&Self::resource(a))).await,
            Version::V2 => self.0.settle(&a.payment, &a.offer.to_v2()).await,
        }?;
        Ok(SettleOutcome::Settled { tx, gas: 0 })
    }

    fn name(&self) -> &'static str {
        "facilitator"
    }
}
