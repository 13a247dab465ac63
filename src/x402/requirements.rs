//! Builds the requirements a priced route offers and renders them as v1 and v2 402 answers.

use std::sync::Arc;

use alloy::primitives::U256;
use serde_json::json;

use super::network::{Family, Network};
use super::types::{PaymentRequiredV1, PaymentRequiredV2, RequirementsV1, RequirementsV2, ResourceInfo};

/// How the signed value is compared with the price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AmountMatch {
    /// The value must equal the price (what the current reference implementations require).
    #[default]
    Exact,
    /// The value may exceed the price (the v1 spec's `maxAmountRequired` reading).
    AtLeast,
}

/// What a client asked for: the resource URL as 402s name it, and the method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub url: String,
    pub method: String,
}

/// One way to pay for a route: a price on a network, to the tenant's address. Built once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub scheme: &'static str,
    pub network: Arc<Network>,
    /// The price in the asset's atomic units.
    pub amount: U256,
    /// The payee, as sent to clients (checksummed for EVM).
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    /// Scheme-specific extras: the EIP-712 domain name/version (EVM) or the fee payer (Solana).
    pub extra: serde_json::Value,
}

impl Offer {
    /// The network id in the words of the version the client paid in.
    pub fn network_id(&self, version: super::Version) -> String {
        match version {
            super::Version::V1 => self.network.name.clone(),
            super::Version::V2 => self.network.caip2.clone(),
        }
    }

    /// The `exact` offer for `network`: with the USDC domain the client signs under (EVM), or the
    /// fee payer the client's transaction names (Solana).
    pub fn exact(network: Arc<Network>, amount: U256, pay_to: String, max_timeout_seconds: u64) -> Offer {
        let extra = match network.family {
            Family::Evm => json!({"name": network.eip712_name, "version": network.eip712_version}),
            Family::Solana => match &network.fee_payer {
                Some(fp) => json!({"feePayer": fp}),
                None => json!({}),
            },
        };
        Offer {
            scheme: "exact",
            network,
            amount,
            pay_to,
            max_timeout_seconds,
            extra,
        }
    }

    pub fn to_v1(&self, resource: &Resource<'_>) -> RequirementsV1 {
        RequirementsV1 {
            scheme: self.scheme.to_string(),
            network: self.network.name.clone(),
            max_amount_required: self.amount.to_string(),
            asset: self.network.asset.clone(),
            pay_to: self.pay_to.clone(),
            resource: resource.url.to_string(),
            description: resource.description.to_string(),
            mime_type: resource.mime_type.to_string(),
            // The v1 reference middleware describes the call here; its clients refuse `null`.
            output_schema: Some(json!({"input": {"type": "http", "method": resource.method, "discoverable": true}})),
            max_timeout_seconds: self.max_timeout_seconds,
            extra: Some(self.extra.clone()),
        }
    }

    pub fn to_v2(&self) -> RequirementsV2 {
        RequirementsV2 {
            scheme: self.scheme.to_string(),
            network: self.network.caip2.clone(),
            amount: self.amount.to_string(),
            asset: self.network.asset.clone(),
            pay_to: self.pay_to.clone(),
            max_timeout_seconds: self.max_timeout_seconds,
            extra: Some(self.extra.clone()),
        }
    }
}

/// What the client is paying for, as the 402 names it.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    pub url: &'a str,
    /// The HTTP method the client used (v1 describes it in `outputSchema.input`).
    pub method: &'a str,
    pub description: &'a str,
    pub mime_type: &'a str,
}

/// The v1 402 body for these offers.
pub fn payment_required_v1(offers: &[Offer], resource: &Resource<'_>, error: &str) -> PaymentRequiredV1 {
    PaymentRequiredV1 {
        x402_version: 1,
        error: error.to_string(),
        accepts: offers.iter().map(|o| o.to_v1(resource)).collect(),
    }
}

/// The v2 `PAYMENT-REQUIRED` value for these offers (before base64).
pub fn payment_required_v2(
    offers: &[Offer],
    resource: &Resource<'_>,
    error: &str,
    extensions: Option<serde_json::Value>,
) -> PaymentRequiredV2 {
    PaymentRequiredV2 {
        x402_version: 2,
        error: Some(error.to_string()),
        resource: ResourceInfo {
            url: resource.url.to_string(),
            description: resource.description.to_string(),
            mime_type: resource.mime_type.to_string(),
        },
        accepts: offers.iter().map(Offer::to_v2).collect(),
        extensions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::network::{builtin, Network};

    #[test]
    fn v1_and_v2_carry_the_same_offer_in_their_own_words() {
        let net = Arc::new(Network::from_known(builtin("base-sepolia").unwrap()));
        let offer = Offer::exact(
            net,
            U256::from(10000u64),
            "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
            60,
        );
        let res = Resource {
            url: "https://api.example.com/premium-data",
            method: "GET",
            description: "d",
            mime_type: "application/json",
        };
        let v1 = serde_json::to_value(payment_required_v1(
            std::slice::from_ref(&offer),
            &res,
            "X-PAYMENT header is required",
        ))
        .unwrap();
        assert_eq!(
            v1,
            json!({"x402Version":1,"error":"X-PAYMENT header is required","accepts":[{
                "scheme":"exact","network":"base-sepolia","maxAmountRequired":"10000",
                "asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                "resource":"https://api.example.com/premium-data","description":"d","mimeType":"application/json",
                "outputSchema":{"input":{"type":"http","method":"GET","discoverable":true}},"maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}]})
        );
        let v2 = serde_json::to_value(payment_required_v2(&[offer], &res, "e", None)).unwrap();
        assert_eq!(v2["accepts"][0]["network"], "eip155:84532");
        assert_eq!(v2["accepts"][0]["amount"], "10000");
        assert_eq!(v2["resource"]["url"], "https://api.example.com/premium-data");
        assert!(v2["accepts"][0].get("resource").is_none());
    }
}
