//! Facilitator mode: an external x402 facilitator verifies and settles (`POST /verify`, `/settle`).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chains::{ChainError, Rejection};
use crate::x402::{reason, FacilitatorRequest, PaymentPayload, SettleResponse, VerifyResponse};

/// A client of one facilitator.
#[derive(Debug, Clone)]
pub struct FacilitatorClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl FacilitatorClient {
    /// `token` is sent as `Authorization: Bearer …` when present.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the facilitator HTTP client: {e}"))?;
        Ok(FacilitatorClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    async fn post<R: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        payload: &PaymentPayload,
        requirements: &R,
    ) -> Result<T, ChainError> {
        let body = FacilitatorRequest {
            x402_version: payload.x402_version,
            payment_payload: payload,
            payment_requirements: requirements,
        };
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            ChainError::Unavailable(format!(
                "facilitator {}{path} unreachable: {e}; check settlement.facilitator_url",
                self.base
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ChainError::Unavailable(format!("facilitator {}{path}: {e}", self.base)))?;
        // Facilitators answer refusals with 400 and a well-formed body; parse whatever came back.
        match serde_json::from_slice::<T>(&bytes) {
            Ok(v) => Ok(v),
            Err(_) if status.is_success() => Err(ChainError::Unavailable(format!(
                "facilitator {}{path} answered {status} with a body that is not an x402 response",
                self.base
            ))),
            Err(_) => Err(ChainError::Unavailable(format!(
                "facilitator {}{path} answered {status}",
                self.base
            ))),
        }
    }

    /// Asks the facilitator whether the payment is good; a refusal is a [`Rejection`].
    pub async fn verify<R: Serialize>(&self, payload: &PaymentPayload, requirements: &R) -> Result<(), ChainError> {
        let v: VerifyResponse = self.post("/verify", payload, requirements).await?;
        if v.is_valid {
            Ok(())
        } else {
            let why = v
                .invalid_reason
                .unwrap_or_else(|| reason::UNEXPECTED_VERIFY.to_string());
            Err(Rejection::new(why.clone(), format!("the facilitator refused the payment: {why}")).into())
        }
    }

    /// Asks the facilitator to settle; returns the transaction.
    pub async fn settle<R: Serialize>(&self, payload: &PaymentPayload, requirements: &R) -> Result<String, ChainError> {
        let s: SettleResponse = self.post("/settle", payload, requirements).await?;
        if s.success && !s.transaction.is_empty() {
            Ok(s.transaction)
        } else {
            let why = s.error_reason.unwrap_or_else(|| reason::UNEXPECTED_SETTLE.to_string());
            Err(Rejection::new(why.clone(), format!("the facilitator could not settle: {why}")).into())
        }
    }
}
