//! The x402 protocol itself: wire types for v1 and v2, the header codec, the network table and the
//! requirement builder. Pure data and functions: nothing here touches the network.

pub mod codec;
pub mod identifier;
pub mod network;
pub mod requirements;
pub mod types;

pub use codec::{decode_payment, encode_header, DecodeError, MAX_HEADER_BYTES};
pub use network::{Family, Network};
pub use requirements::{AmountMatch, Asked, Offer, Resource};
pub use types::*;

/// x402 reason strings, as the spec and the reference implementations name them.
pub mod reason {
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    pub const INVALID_SIGNATURE: &str = "invalid_exact_evm_payload_signature";
    pub const VALID_BEFORE: &str = "invalid_exact_evm_payload_authorization_valid_before";
    pub const VALID_AFTER: &str = "invalid_exact_evm_payload_authorization_valid_after";
    pub const VALUE: &str = "invalid_exact_evm_payload_authorization_value";
    pub const RECIPIENT: &str = "invalid_exact_evm_payload_recipient_mismatch";
    pub const NONCE_USED: &str = "invalid_exact_evm_payload_authorization_nonce_used";
    pub const INVALID_NETWORK: &str = "invalid_network";
    pub const INVALID_SCHEME: &str = "invalid_scheme";
    pub const INVALID_PAYLOAD: &str = "invalid_payload";
    pub const INVALID_VERSION: &str = "invalid_x402_version";
    pub const UNEXPECTED_VERIFY: &str = "unexpected_verify_error";
    pub const UNEXPECTED_SETTLE: &str = "unexpected_settle_error";
    pub const DUPLICATE: &str = "duplicate_settlement";
    /// Settlement sent (or maybe sent) but not confirmed yet: the spec's non-final settle answer.
    pub const SETTLEMENT_PENDING: &str = "settlement_pending";
    pub const PAYER_BLOCKED: &str = "invalid_exact_evm_payload_payer_blocked";
    pub const UPSTREAM_FAILED: &str = "upstream_failed";
    /// Tollgate's: the payer owes an earlier payment that was served and then failed on chain.
    pub const PAYER_OWES: &str = "payer_owes_failed_payment";
    pub const SVM_RECIPIENT: &str = "invalid_exact_svm_payload_recipient_mismatch";

    /// The payee is not the one asked for, in the words of the network's scheme.
    pub fn recipient_mismatch(f: super::Family) -> &'static str {
        match f {
            super::Family::Evm => RECIPIENT,
            super::Family::Solana => SVM_RECIPIENT,
        }
    }
}
