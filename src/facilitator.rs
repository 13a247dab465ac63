//! Facilitator mode: an external x402 facilitator verifies and settles (`POST /verify`, `/settle`).
//!
//! A verify that fails charges nothing, so any failure of the call is "unavailable" (503). A settle
//! is different: once the request has left, the facilitator may have broadcast the transfer even if
//! its answer is an error status, unreadable, or never comes. Only a refusal it states plainly
//! (`success: false` with a reason and no transaction) or a connection that was never made is
//! "not charged"; everything else is in doubt, recorded pending and reconciled from the chain.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chains::{ChainError, Rejection};
use crate::x402::{reason, FacilitatorRequest, PaymentPayload, SettleResponse, VerifyResponse};

/// A client of one facilitator.
#[derive(Debug, Clone)]
pub struct FacilitatorClient {
    base: String,
    /// The base URL without path or query, for logs.
    label: String,
    token: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
}

/// How one call went.
enum Call<T> {
    /// No connection was made: the facilitator never saw the request.
    NotSent(String),
    /// The request may have arrived, and no usable answer came back (timeout, dropped connection,
    /// an error status or a body that is not the expected response).
    NoAnswer(String),
    Answered(T),
}

impl FacilitatorClient {
    /// `token` is sent as `Authorization: Bearer …` when present; `timeout` bounds each call.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("cannot build the facilitator HTTP client: {e}"))?;
        Ok(FacilitatorClient {
            base: base.trim_end_matches('/').to_string(),
            label: crate::redact::url_str(base),
            token,
            timeout,
            http,
        })
    }

    async fn post<R: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        payload: &PaymentPayload,
        requirements: &R,
    ) -> Call<T> {
        let body = FacilitatorRequest {
            x402_version: payload.x402_version,
            payment_payload: payload,
            payment_requirements: requirements,
        };
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Call::NotSent(format!(
                    "facilitator {}{path} unreachable: {}",
                    self.label,
                    crate::redact::text(&e.without_url().to_string())
                ))
            }
            Err(e) if e.is_timeout() => {
                return Call::NoAnswer(format!(
                    "facilitator {}{path} did not answer within {:?} (settlement.facilitator_timeout_secs)",
                    self.label, self.timeout
                ))
            }
            Err(e) => {
                return Call::NoAnswer(format!(
                    "facilitator {}{path} failed mid-call: {}",
                    self.label,
                    crate::redact::text(&e.without_url().to_string())
                ))
            }
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Call::NoAnswer(format!(
                    "facilitator {}{path} answered {status} but its body could not be read: {}",
                    self.label,
                    crate::redact::text(&e.without_url().to_string())
                ))
            }
        };
        // Facilitators answer refusals with 200 (or 400) and a well-formed body; a server error is
        // not an answer about the payment, whatever its body says.
        if status.is_server_error() {
            return Call::NoAnswer(format!("facilitator {}{path} answered {status}", self.label));
        }
        match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Call::Answered(v),
            Err(_) => Call::NoAnswer(format!(
                "facilitator {}{path} answered {status} with a body that is not an x402 response",
                self.label
            )),
        }
    }

    /// Asks the facilitator whether the payment is good; a refusal is a [`Rejection`]. Any failure
    /// of the call itself is "unavailable": verifying charges nothing.
    pub async fn verify<R: Serialize>(&self, payload: &PaymentPayload, requirements: &R) -> Result<(), ChainError> {
        let v: VerifyResponse = match self.post("/verify", payload, requirements).await {
            Call::Answered(v) => v,
            Call::NotSent(why) | Call::NoAnswer(why) => {
                tracing::warn!(error = %why, "facilitator verify failed");
                return Err(ChainError::Unavailable("the payment facilitator is unavailable".into()));
            }
        };
        if v.is_valid {
            Ok(())
        } else {
            let why = v
                .invalid_reason
                .unwrap_or_else(|| reason::UNEXPECTED_VERIFY.to_string());
            Err(Rejection::new(why.clone(), format!("the facilitator refused the payment: {why}")).into())
        }
    }

    /// Asks the facilitator to settle; returns the transaction. Unknown outcomes are
    /// [`ChainError::InDoubt`], never "not charged".
    pub async fn settle<R: Serialize>(&self, payload: &PaymentPayload, requirements: &R) -> Result<String, ChainError> {
        let s: SettleResponse = match self.post("/settle", payload, requirements).await {
            Call::Answered(s) => s,
            Call::NotSent(why) => {
                tracing::warn!(error = %why, "facilitator settle not sent");
                return Err(ChainError::Unavailable("the payment facilitator is unavailable".into()));
            }
            Call::NoAnswer(why) => {
                tracing::warn!(error = %why, "facilitator settle outcome unknown; recorded pending");
                return Err(ChainError::InDoubt {
                    tx: None,
                    detail: "the payment facilitator did not confirm the settlement".into(),
                });
            }
        };
        let tx = Some(s.transaction).filter(|t| !t.is_empty());
        match (s.success, tx) {
            (true, Some(tx)) => Ok(tx),
            // Sent something, or says it succeeded without saying what: on chain or not, the chain
            // will tell.
            (_, tx @ Some(_)) | (true, tx @ None) => {
                tracing::warn!(tx = ?tx, success = s.success, reason = ?s.error_reason, "facilitator settle unclear; recorded pending");
                Err(ChainError::InDoubt {
                    tx,
                    detail: "the payment facilitator did not confirm the settlement".into(),
                })
            }
            (false, None) => {
                let why = s.error_reason.unwrap_or_else(|| reason::UNEXPECTED_SETTLE.to_string());
                Err(Rejection::new(why.clone(), format!("the facilitator could not settle: {why}")).into())
            }
        }
    }
}
