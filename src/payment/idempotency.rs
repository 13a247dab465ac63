//! The payment-identifier extension ([`crate::x402::identifier`]) in the pipeline: a paid request
//! that carries an id holds it in the database while it runs; its final answer is kept so that the
//! same payment sent again gets that answer (the proxy replays the response, the facilitator its
//! settle result) without being charged or forwarded again. Another payment under the same id is a
//! conflict (409). Shared by all gateways through the database, like the replay guard.

use super::{db_unavailable, Payments, Refusal};
use crate::store::IdClaim;
use crate::x402::identifier::Sent;

/// How long a request may hold an id before another may take it (a crashed holder).
const LEASE_MS: i64 = 120_000;
/// How long an answer is kept for retries.
const KEEP_MS: i64 = 24 * 3600 * 1000;

/// An id this request holds; end it with [`Payments::finish_id`] or [`Payments::forget_id`].
#[derive(Debug, Clone)]
pub struct IdHold {
    pub tenant: String,
    pub id: String,
}

/// What to do with a paid request, as far as its id goes.
#[derive(Debug)]
pub enum IdStart {
    /// No id (and none required): an ordinary payment.
    Untracked,
    /// This request holds the id: go on, then finish it.
    Held(IdHold),
    /// Answered before for this same payment: give that answer.
    Answered(String),
    /// The id was used for another payment: 409.
    Conflict,
    /// A request with this id and payment is running now: 409, try again shortly.
    InProgress,
}

impl Payments {
    /// Takes the id a payment carries (`sent`) for this `payload` (the header or JSON it came in;
    /// see [`crate::x402::identifier::digest`]). `required` with no id: refused as malformed (400).
    pub async fn hold_id(&self, tenant: &str, sent: &Sent, required: bool, payload: &[u8]) -> Result<IdStart, Refusal> {
        let Some(id) = &sent.id else {
            return if required {
                Err(Refusal::Malformed(format!(
                    "this resource requires the payment-identifier extension: put an id of 16 to 128 \
                     characters in extensions.{}.info.id",
                    crate::x402::identifier::EXTENSION
                )))
            } else {
                Ok(IdStart::Untracked)
            };
        };
        let now = self.clock.now_ms() as i64;
        let payload_hash = crate::x402::identifier::digest(payload);
        let claim = self
            .store
            .claim_payment_id(tenant, id, &payload_hash, now, LEASE_MS, now - KEEP_MS)
            .await
            .map_err(db_unavailable)?;
        Ok(match claim {
            IdClaim::Held => IdStart::Held(IdHold {
                tenant: tenant.to_string(),
                id: id.clone(),
            }),
            IdClaim::Answered(a) => IdStart::Answered(a),
            IdClaim::Conflict => IdStart::Conflict,
            IdClaim::InProgress => IdStart::InProgress,
        })
    }

    /// Ends a hold. `Some(answer)`: final, kept for retries. `None`: not final (the payment is
    /// pending, or charged and not yet served): only the same payment may take the id again.
    pub async fn finish_id(&self, hold: &IdHold, answer: Option<&str>) {
        if let Err(e) = self.store.finish_payment_id(&hold.tenant, &hold.id, answer).await {
            // The lease runs out and the same payment may take the id again: nothing is lost.
            tracing::error!(error = %e, "could not record a payment-identifier answer");
        }
    }

    /// Forgets ids whose answers are past keeping (the reconciler calls it).
    pub async fn purge_ids(&self) {
        let before = self.clock.now_ms() as i64 - KEEP_MS;
        match self.store.purge_payment_ids(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(n, "payment identifiers past keeping forgotten"),
            Err(e) => tracing::warn!(error = %e, "could not forget old payment identifiers; will retry"),
        }
    }

    /// Frees an id: nothing was charged under it.
    pub async fn forget_id(&self, hold: &IdHold) {
        if let Err(e) = self.store.forget_payment_id(&hold.tenant, &hold.id).await {
            tracing::error!(error = %e, "could not free a payment identifier");
        }
    }
}
