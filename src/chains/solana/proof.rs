//! A Solana USDC transfer already made (the hosted API's `/verify` in proof form): read from the
//! transaction's pre/post token balances, the way explorers read them.

use solana_transaction_status_client_types::option_serializer::OptionSerializer;
use solana_transaction_status_client_types::{EncodedConfirmedTransactionWithStatusMeta, UiTransactionTokenBalance};

use crate::chains::ProofError;

/// What a confirmed transaction moved of `mint` to `pay_to`'s token accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Atomic units that `pay_to`'s accounts of `mint` gained.
    pub amount: u64,
    /// The owner whose balance of `mint` fell the most (the sender), when one did.
    pub from: Option<String>,
    pub block_time: Option<i64>,
}

fn owner(b: &UiTransactionTokenBalance) -> Option<&str> {
    match &b.owner {
        OptionSerializer::Some(o) => Some(o.as_str()),
        _ => None,
    }
}

fn amount(b: &UiTransactionTokenBalance) -> i128 {
    b.ui_token_amount.amount.parse::<i128>().unwrap_or(0)
}

/// Reads the token balance changes of `tx` for `mint`: what `pay_to` gained, and who paid it.
pub fn moved(tx: &EncodedConfirmedTransactionWithStatusMeta, mint: &str, pay_to: &str) -> Result<Moved, ProofError> {
    let meta = tx
        .transaction
        .meta
        .as_ref()
        .ok_or_else(|| ProofError::Malformed("the node returned the transaction without its status".into()))?;
    if meta.err.is_some() {
        return Err(ProofError::Reverted);
    }
    let empty = Vec::new();
    let pre = match &meta.pre_token_balances {
        OptionSerializer::Some(v) => v,
        _ => &empty,
    };
    let post = match &meta.post_token_balances {
        OptionSerializer::Some(v) => v,
        _ => &empty,
    };
    // Change per token account of this mint (an account absent before was created: 0 before).
    let mut change: Vec<(u8, Option<&str>, i128)> = Vec::new();
    for b in post.iter().filter(|b| b.mint == mint) {
        change.push((b.account_index, owner(b), amount(b)));
    }
    for b in pre.iter().filter(|b| b.mint == mint) {
        match change.iter_mut().find(|c| c.0 == b.account_index) {
            Some(c) => c.2 -= amount(b),
            // Closed in the transaction: all of it left.
            None => change.push((b.account_index, owner(b), -amount(b))),
        }
    }
    let gained: i128 = change
        .iter()
        .filter(|c| c.1 == Some(pay_to) && c.2 > 0)
        .map(|c| c.2)
        .sum();
    if gained <= 0 {
        return Err(ProofError::NoTransfer);
    }
    let from = change
        .iter()
        .filter(|c| c.2 < 0)
        .min_by_key(|c| c.2)
        .and_then(|c| c.1.map(str::to_string));
    Ok(Moved {
        amount: u64::try_from(gained).unwrap_or(u64::MAX),
        from,
        block_time: tx.block_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> EncodedConfirmedTransactionWithStatusMeta {
        let path = format!("{}/tests/fixtures/solana/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A real devnet USDC transfer (0.01 USDC from BLw3Rwe… to BXT1K8…).
    #[test]
    fn reads_a_devnet_usdc_transfer() {
        let tx = fixture("devnet-usdc-transfer.json");
        let m = moved(
            &tx,
            "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
            "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe",
        )
        .unwrap();
        assert_eq!(m.amount, 10_000);
        assert_eq!(m.from.as_deref(), Some("BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP"));
        assert_eq!(m.block_time, Some(1736502537));
        // The sender gained nothing; another mint moved nothing.
        assert_eq!(
            moved(
                &tx,
                "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
                "BLw3RweJmfbTapJRgnPRvd962YDjFYAnVGd1p5hmZ5tP"
            ),
            Err(ProofError::NoTransfer)
        );
        assert_eq!(
            moved(
                &tx,
                "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
                "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe"
            ),
            Err(ProofError::NoTransfer)
        );
    }

    /// A real mainnet Token-2022 transfer whose recipient account was created in the same
    /// transaction (no pre balance for it).
    #[test]
    fn reads_a_transfer_into_a_new_account() {
        let tx = fixture("mainnet-token2022-transfer-new-account.json");
        let m = moved(
            &tx,
            "HeLp6NuQkmYB4pYWo2zYs22mESHXPQYzXbB8n4V98jwC",
            "BYh4CfuGDvFMKaZp3RPmkw9y6qg3sWukA2TiGJDeLKZi",
        )
        .unwrap();
        assert_eq!(m.amount, 10_000_000);
        assert_eq!(m.from.as_deref(), Some("EMmTjuHsYCYX7vgPcQ2QVbNwYAwcvGoSMCEaHKc19DdE"));
    }

    #[test]
    fn a_failed_transaction_is_no_proof() {
        let mut tx = fixture("devnet-usdc-transfer.json");
        let meta = tx.transaction.meta.as_mut().unwrap();
        meta.err = Some(serde_json::from_value(serde_json::json!({"InstructionError": [0, {"Custom": 1}]})).unwrap());
        assert_eq!(
            moved(
                &tx,
                "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
                "BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe"
            ),
            Err(ProofError::Reverted)
        );
    }
}
