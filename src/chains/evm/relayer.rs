//! The relayer: one private key that sends `transferWithAuthorization` transactions and pays gas.
//!
//! Concurrent settlements from one key need their own nonce bookkeeping: asking the node for the
//! pending count per transaction hands the same nonce to concurrent senders (the reference stack lost
//! 50–80% of its payments that way). Nonces are handed out locally; a nonce whose transaction never
//! reached the node goes back to a free list and is used next, or filled by a no-op transfer so that
//! later transactions are not stuck behind the gap.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, Signature, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportError};
use tokio::sync::oneshot;

use super::receipts::ReceiptWatcher;

/// How long a fee estimate is reused.
const FEE_TTL: Duration = Duration::from_secs(2);
/// How long a released nonce may wait for a taker before a no-op fills it.
const GAP_FILL_AFTER: Duration = Duration::from_secs(1);

/// Why a transaction could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The relayer has not enough native gas token.
    #[error("relayer {address} cannot pay gas: {detail}")]
    OutOfGas { address: Address, detail: String },
    /// The node refused the transaction for a reason of its own.
    #[error("node refused the transaction: {0}")]
    Refused(String),
    /// The node could not be reached; the transaction may or may not have arrived.
    #[error("node unreachable while sending {hash}: {detail}")]
    InDoubt { hash: B256, detail: String },
    /// The node could not be reached before anything was sent.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The transfer's simulation reverted (the contract's reason): it was not sent.
    #[error("the transfer would revert: {0}")]
    WouldRevert(String),
}

#[derive(Debug, Default)]
struct Nonces {
    next: Option<u64>,
    free: BTreeSet<u64>,
}

/// A relayer key with its nonce and fee bookkeeping.
pub struct Relayer {
    /// The key for libsecp256k1, which signs (about 8x fewer instructions than k256's signing).
    secret: secp256k1::SecretKey,
    address: Address,
    chain_id: u64,
    nonces: tokio::sync::Mutex<Nonces>,
    fees: Mutex<Option<(Instant, u128, u128)>>,
    /// Held from taking a nonce until the node has the transaction: transactions reach the node in
    /// nonce order. Sent concurrently, a later nonce can arrive first and wait in the node's queue;
    /// a node that mines on arrival (anvil) then leaves it there until some later transaction comes,
    /// which held whole batches until the receipt timeout.
    sending: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Relayer {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayer")
            .field("address", &self.address())
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

impl Drop for Relayer {
    // The key does not outlive the relayer in this memory (k256's key, used before, wiped itself).
    fn drop(&mut self) {
        self.secret.non_secure_erase();
    }
}

impl Relayer {
    /// Parses a hex private key. The error never contains the key.
    pub fn from_key(key: &str, chain_id: u64) -> Result<Relayer, String> {
        let signer: PrivateKeySigner = key
            .trim()
            .parse()
            .map_err(|_| "the relayer key is not a 32-byte hex private key".to_string())?;
        let mut bytes = signer.to_bytes().0;
        let secret = secp256k1::SecretKey::from_byte_array(bytes)
            .map_err(|_| "the relayer key is not a valid secp256k1 private key".to_string());
        // The key's copy on the stack is wiped (the parsed signer wipes its own on drop).
        for b in bytes.iter_mut() {
            // SAFETY: a valid, aligned, exclusive reference to a byte.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
        let secret = secret?;
        Ok(Relayer {
            secret,
            address: signer.address(),
            chain_id,
            nonces: Default::default(),
            fees: Mutex::new(None),
            sending: tokio::sync::Mutex::new(()),
        })
    }

    /// Parses one key or several (separated by commas, spaces or new lines: one relayer each, so
    /// that settlements can go out from several accounts). The error never contains a key.
    pub fn from_keys(text: &str, chain_id: u64) -> Result<Vec<Relayer>, String> {
        let keys: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .collect();
        let mut out: Vec<Relayer> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let r = Relayer::from_key(key, chain_id).map_err(|e| match keys.len() {
                1 => e,
                _ => format!("key {} of {} in the list: {e}", i + 1, keys.len()),
            })?;
            if out.iter().any(|o| o.address() == r.address()) {
                return Err(format!(
                    "key {} of the list is given twice (relayer {}): each key may appear once",
                    i + 1,
                    r.address()
                ));
            }
            out.push(r);
        }
        if out.is_empty() {
            return Err("the relayer key is empty".into());
        }
        Ok(out)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    async fn reserve_nonce(&self, p: &RootProvider) -> Result<u64, TransportError> {
        let mut n = self.nonces.lock().await;
        if let Some(free) = n.free.pop_first() {
            return Ok(free);
        }
        let next = match n.next {
            Some(v) => v,
            None => p.get_transaction_count(self.address()).pending().await?,
        };
        n.next = Some(next + 1);
        Ok(next)
    }

    /// Forgets local nonce state; the next reservation asks the node. Also the repair for a local
    /// count that ran ahead of the chain (a transaction the node dropped, a chain that was reset):
    /// the next transaction then takes the nonce the node is waiting for.
    pub async fn resync(&self) {
        let mut n = self.nonces.lock().await;
        n.next = None;
        n.free.clear();
    }

    async fn fees(&self, p: &RootProvider) -> Result<(u128, u128), TransportError> {
        if let Some((at, max, prio)) = *self.fees.lock().expect("fee lock") {
            if at.elapsed() < FEE_TTL {
                return Ok((max, prio));
            }
        }
        let est = p.estimate_eip1559_fees().await?;
        let v = (est.max_fee_per_gas, est.max_priority_fee_per_gas);
        *self.fees.lock().expect("fee lock") = Some((Instant::now(), v.0, v.1));
        Ok(v)
    }

    fn sign(
        &self,
        nonce: u64,
        gas_limit: u64,
        fees: (u128, u128),
        to: Address,
        value: U256,
        input: Bytes,
    ) -> (B256, Vec<u8>) {
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.0,
            max_priority_fee_per_gas: fees.1,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let sig = self.sign_hash(tx.signature_hash());
        let signed = tx.into_signed(sig);
        let hash = *signed.hash();
        (hash, TxEnvelope::from(signed).encoded_2718())
    }

    /// An RFC 6979 signature with a low `s`, as alloy's local signer makes (the same bytes).
    fn sign_hash(&self, hash: B256) -> Signature {
        let (id, rs) = secp256k1::SECP256K1
            .sign_ecdsa_recoverable(secp256k1::Message::from_digest(hash.0), &self.secret)
            .serialize_compact();
        Signature::from_bytes_and_parity(&rs, i32::from(id) & 1 == 1)
    }

    /// Signs and sends a call; returns the transaction hash once the node has accepted it, and the
    /// receiver of its receipt (registered with `receipts` before sending, so none can be missed).
    pub async fn send(
        self: &Arc<Self>,
        p: &RootProvider,
        to: Address,
        input: Bytes,
        gas_limit: u64,
        receipts: &Arc<ReceiptWatcher>,
    ) -> Result<(B256, oneshot::Receiver<TransactionReceipt>), SendError> {
        let mut last = String::new();
        for _ in 0..3 {
            let fees = self.fees(p).await.map_err(|e| SendError::Unreachable(e.to_string()))?;
            let _in_order = self.sending.lock().await;
            let nonce = self
                .reserve_nonce(p)
                .await
                .map_err(|e| SendError::Unreachable(e.to_string()))?;
            let (hash, raw) = self.sign(nonce, gas_limit, fees, to, U256::ZERO, input.clone());
            let awaited = receipts.expect(hash);
            let sent = p.send_raw_transaction(&raw).await;
            if sent.is_err() {
                receipts.forget(&hash);
            }
            match sent {
                Ok(_) => {
                    receipts.sent();
                    return Ok((hash, awaited));
                }
                Err(RpcError::ErrorResp(e)) => {
                    let msg = e.message.to_ascii_lowercase();
                    if msg.contains("already known") || msg.contains("already imported") {
                        return Ok((hash, receipts.expect(hash)));
                    }
                    if msg.contains("nonce too low") || msg.contains("nonce is too low") || msg.contains("underpriced")
                    {
                        // Someone (another process with this key, or a stale local count) used it.
                        self.resync().await;
                        last = e.message.to_string();
                        continue;
                    }
                    self.release(p, nonce).await;
                    if msg.contains("insufficient funds") {
                        return Err(SendError::OutOfGas {
                            address: self.address(),
                            detail: e.message.to_string(),
                        });
                    }
                    return Err(SendError::Refused(e.message.to_string()));
                }
                Err(e) => {
                    // Unknown whether it arrived: ask the node again for the next nonce.
                    self.resync().await;
                    return Err(SendError::InDoubt {
                        hash,
                        detail: e.to_string(),
                    });
                }
            }
        }
        Err(SendError::Refused(format!(
            "nonce conflicts persisted after 3 attempts: {last}"
        )))
    }

    /// Returns an unused nonce; if no transaction takes it soon, a no-op self-transfer fills it.
    async fn release(self: &Arc<Self>, p: &RootProvider, nonce: u64) {
        self.nonces.lock().await.free.insert(nonce);
        let me = self.clone();
        let p = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(GAP_FILL_AFTER).await;
            if !me.nonces.lock().await.free.remove(&nonce) {
                return; // a settlement took it
            }
            let filled = async {
                let fees = me.fees(&p).await?;
                let (_, raw) = me.sign(nonce, 21_000, fees, me.address(), U256::ZERO, Bytes::new());
                p.send_raw_transaction(&raw).await.map(|_| ())
            };
            if let Err(e) = filled.await {
                tracing::warn!(relayer = %me.address(), nonce, error = %crate::redact::text(&e.to_string()), "could not fill a nonce gap; resyncing nonces from the node");
                me.resync().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
    const K2: &str = "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";

    #[test]
    fn transactions_are_signed_as_alloys_signer_signs_them() {
        use alloy::network::TxSignerSync;
        let r = Relayer::from_key(K1, 8453).unwrap();
        let alloy_signer: PrivateKeySigner = K1.parse().unwrap();
        let mut parities = [0; 2];
        for nonce in 0..16u64 {
            let fees = (1_000_000_007 + nonce as u128, 1_000 * nonce as u128);
            let input = Bytes::from(vec![nonce as u8; 100 + nonce as usize]);
            let (hash, raw) = r.sign(nonce, 90_000, fees, Address::repeat_byte(7), U256::ZERO, input.clone());
            let mut tx = TxEip1559 {
                chain_id: 8453,
                nonce,
                gas_limit: 90_000,
                max_fee_per_gas: fees.0,
                max_priority_fee_per_gas: fees.1,
                to: TxKind::Call(Address::repeat_byte(7)),
                value: U256::ZERO,
                access_list: Default::default(),
                input,
            };
            let theirs = alloy_signer.sign_transaction_sync(&mut tx).unwrap();
            let signed = tx.into_signed(theirs);
            assert_eq!(hash, *signed.hash(), "nonce {nonce}");
            assert_eq!(raw, TxEnvelope::from(signed).encoded_2718(), "nonce {nonce}");
            // and the node would see the relayer as the sender
            let ours = r.sign_hash(B256::repeat_byte(nonce as u8));
            assert_eq!(
                ours.recover_address_from_prehash(&B256::repeat_byte(nonce as u8))
                    .unwrap(),
                r.address()
            );
            parities[ours.v() as usize] += 1;
        }
        assert!(
            parities[0] > 0 && parities[1] > 0,
            "both recovery ids were seen: {parities:?}"
        );
    }

    #[test]
    fn one_key_or_several() {
        let one = Relayer::from_keys(&format!("  {K1}\n"), 8453).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].address().to_checksum(None),
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
        );
        for sep in [",", ", ", "\n", " \n\t"] {
            let two = Relayer::from_keys(&format!("{K1}{sep}{K2}"), 8453).unwrap();
            assert_eq!(
                two.iter().map(|r| r.address().to_checksum(None)).collect::<Vec<_>>(),
                [
                    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"
                ],
                "separator {sep:?}"
            );
        }
    }

    #[test]
    fn bad_lists_are_refused_without_showing_a_key() {
        let e = Relayer::from_keys("nothex", 1).unwrap_err();
        assert_eq!(e, "the relayer key is not a 32-byte hex private key");
        let e = Relayer::from_keys(&format!("{K1},{}", &K2[..20]), 1).unwrap_err();
        assert_eq!(
            e,
            "key 2 of 2 in the list: the relayer key is not a 32-byte hex private key"
        );
        let e = Relayer::from_keys(&format!("{K1},{K1}"), 1).unwrap_err();
        assert!(e.starts_with("key 2 of the list is given twice"), "{e}");
        assert!(Relayer::from_keys(" , \n", 1).is_err());
        for e in [
            Relayer::from_keys(&format!("{K1},{K1}"), 1).unwrap_err(),
            Relayer::from_keys(&format!("{K1},{}", &K2[..20]), 1).unwrap_err(),
        ] {
            assert!(!e.contains(&K1[2..12]) && !e.contains(&K2[..12]), "{e}");
        }
    }
}
