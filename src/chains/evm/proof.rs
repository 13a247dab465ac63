//! Proofs of payment: a USDC transfer already on chain, named by its transaction hash (the hosted
//! API's `POST /verify`). Read from the mined receipt only: its USDC `Transfer` logs to the payee.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;

use super::eip3009::IUsdc;
use super::EvmChain;
use crate::chains::{Proof, ProofError};

impl EvmChain {
    pub(super) async fn evm_proof(&self, tx: &str, pay_to: &str) -> Result<Proof, ProofError> {
        let hash: B256 = tx
            .parse()
            .map_err(|_| ProofError::Malformed(format!("'{tx}' is not a transaction hash (0x + 64 hex digits)")))?;
        let payee: Address = pay_to
            .parse()
            .map_err(|_| ProofError::Malformed(format!("payTo '{pay_to}' is not an EVM address")))?;
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|e| ProofError::Unavailable(self.unreachable("a proof lookup", e).to_string()))?
            .ok_or(ProofError::NotFound)?;
        if !receipt.status() {
            return Err(ProofError::Reverted);
        }
        // Every USDC transfer to the payee in this transaction, summed; the payer is the sender of
        // the first. Logs of other contracts (a token that merely calls itself USDC) do not count.
        let mut amount = U256::ZERO;
        let mut from = None;
        for log in receipt.inner.logs() {
            if log.address() != self.domain.asset {
                continue;
            }
            if let Ok(ev) = IUsdc::Transfer::decode_log(&log.inner) {
                if ev.to == payee {
                    amount += ev.value;
                    from.get_or_insert(ev.from);
                }
            }
        }
        let Some(from) = from else {
            return Err(ProofError::NoTransfer);
        };
        let block = receipt.block_number.ok_or(ProofError::NotFound)?;
        let head = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| ProofError::Unavailable(self.unreachable("a proof lookup", e).to_string()))?;
        let block_time = match receipt.block_hash {
            Some(h) => self
                .provider
                .get_block_by_hash(h)
                .await
                .map_err(|e| ProofError::Unavailable(self.unreachable("a proof lookup", e).to_string()))?
                .map(|b| b.header.timestamp),
            None => None,
        };
        Ok(Proof {
            tx: hash.to_string(),
            from: from.to_checksum(None),
            to: payee.to_checksum(None),
            amount,
            confirmations: head.saturating_sub(block) + 1,
            block_time: block_time.unwrap_or(0),
        })
    }
}
