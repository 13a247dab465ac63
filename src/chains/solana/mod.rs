//! Solana: the `exact` scheme's partially signed transfer, checked offline, co-signed by the
//! gateway's fee payer, simulated with signature checks on, sent, and confirmed within its
//! blockhash's lifetime; proofs of transfers already made from their token balance changes.
//!
//! RPC through `solana-rpc-client` (plain JSON-RPC over HTTP; the QUIC/TPU stack of
//! `solana-client` is not needed: transactions go to the RPC node's `sendTransaction`).

pub mod exact;
mod proof;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_rpc_client::nonblocking::rpc_client::RpcClient;
use solana_rpc_client_api::client_error::{Error as ClientError, ErrorKind};
use solana_rpc_client_api::config::{RpcSendTransactionConfig, RpcSimulateTransactionConfig, RpcTransactionConfig};
use solana_rpc_client_api::request::RpcError;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_status_client_types::{TransactionConfirmationStatus, UiTransactionEncoding};

use super::{Chain, ChainError, ChainStatus, Checked, Proof, ProofError, Rejection, SettleOutcome};
use crate::x402::{reason, AmountMatch, Network, Offer, PaymentPayload};
pub use exact::{CheckedSolTransfer, Limits};

/// How a Solana network is reached and settled on.
#[derive(Debug, Clone)]
pub struct SolanaOptions {
    pub rpc_url: String,
    pub rpc_timeout: Duration,
    /// How long a settlement waits for `confirmed` before it is recorded pending.
    pub confirm_timeout: Duration,
    pub poll: Duration,
    pub limits: Limits,
    /// Under this SOL balance (lamports) the fee payer is reported as needing funds.
    pub min_fee_payer_lamports: u64,
}

/// Seconds a Solana payment is assumed to stay sendable (a blockhash lives 150 blocks, about a
/// minute; the chain, not this figure, decides: see [`SolanaChain::status`]).
pub const BLOCKHASH_LIFETIME_SECS: u64 = 150;

/// Reads a fee payer keypair: base58 of the 64-byte keypair (as wallets export it) or the JSON
/// array of bytes `solana-keygen` writes.
pub fn parse_keypair(text: &str) -> Result<Keypair, String> {
    let t = text.trim();
    let bytes: Vec<u8> = if t.starts_with('[') {
        serde_json::from_str(t).map_err(|_| "not a JSON array of 64 bytes (solana-keygen's format)".to_string())?
    } else {
        bs58::decode(t)
            .into_vec()
            .map_err(|_| "neither base58 nor a JSON array of bytes".to_string())?
    };
    if bytes.len() != 64 {
        return Err(format!("a keypair is 64 bytes; this one is {}", bytes.len()));
    }
    Keypair::try_from(bytes.as_slice()).map_err(|_| "the keypair's public half does not match its secret".into())
}

/// One Solana network: offline checks, the RPC, and (with a key) the fee payer.
pub struct SolanaChain {
    network: Arc<Network>,
    mint: Pubkey,
    /// The fee payer the 402 names (`extra.feePayer`).
    fee_payer: Pubkey,
    /// Its key, when this process settles (not in facilitator mode).
    signer: Option<Arc<Keypair>>,
    no_signer: String,
    rpc: RpcClient,
    rpc_label: String,
    opts: SolanaOptions,
}

impl std::fmt::Debug for SolanaChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolanaChain")
            .field("network", &self.network.name)
            .field("rpc", &self.rpc_label)
            .field("fee_payer", &self.fee_payer.to_string())
            .finish()
    }
}

impl SolanaChain {
    /// Builds the chain without contacting it. `signer` is `Err(what to configure)` without a key.
    pub fn new(
        network: Arc<Network>,
        opts: SolanaOptions,
        signer: Result<Keypair, String>,
    ) -> Result<SolanaChain, String> {
        let mint = Pubkey::from_str(&network.asset).map_err(|_| {
            format!(
                "networks.{}.usdc: '{}' is not a Solana address",
                network.name, network.asset
            )
        })?;
        let url: url::Url = opts
            .rpc_url
            .parse()
            .map_err(|_| format!("networks.{}.rpc_url is not a URL", network.name))?;
        let rpc_label = crate::redact::url(&url);
        let (signer, no_signer) = match signer {
            Ok(k) => (Some(Arc::new(k)), String::new()),
            Err(why) => (None, why),
        };
        let fee_payer = match (&signer, network.fee_payer.as_deref()) {
            (Some(k), _) => k.pubkey(),
            (None, Some(p)) => Pubkey::from_str(p)
                .map_err(|_| format!("networks.{}.fee_payer: '{p}' is not a Solana address", network.name))?,
            (None, None) => return Err(format!("networks.{}: {no_signer}", network.name)),
        };
        let rpc = RpcClient::new_with_timeout_and_commitment(
            opts.rpc_url.clone(),
            opts.rpc_timeout,
            CommitmentConfig::confirmed(),
        );
        Ok(SolanaChain {
            network,
            mint,
            fee_payer,
            signer,
            no_signer,
            rpc,
            rpc_label,
            opts,
        })
    }

    fn transfer(c: &Checked) -> &CheckedSolTransfer {
        match c {
            Checked::Solana(t) => t,
            #[allow(unreachable_patterns)]
            _ => unreachable!("an EVM payment reached the Solana chain"),
        }
    }

    fn unreachable(&self, what: &str, e: impl std::fmt::Display) -> ChainError {
        super::unreachable(&self.network, &self.rpc_label, what, e)
    }

    /// The client's transaction with the fee payer's signature added.
    fn cosigned(&self, t: &CheckedSolTransfer) -> Result<(VersionedTransaction, Signature), ChainError> {
        let Some(k) = &self.signer else {
            return Err(ChainError::Unavailable(self.no_signer.clone()));
        };
        let mut tx = t.tx.clone();
        let sig = k.sign_message(&t.message);
        tx.signatures[0] = sig;
        Ok((tx, sig))
    }

    /// The transaction's id: the fee payer's signature, which depends only on the message
    /// (ed25519 signatures are deterministic), so every copy of one message has the same id.
    fn id(&self, t: &CheckedSolTransfer) -> Option<Signature> {
        self.signer.as_ref().map(|k| k.sign_message(&t.message))
    }

    /// `Some(Ok)` landed and succeeded, `Some(Err)` landed and failed, `None` not seen (yet).
    async fn landed(&self, sig: &Signature) -> Result<Option<Result<(), String>>, ClientError> {
        let r = self.rpc.get_signature_statuses_with_history(&[*sig]).await?;
        Ok(r.value.into_iter().next().flatten().and_then(|s| {
            let done = matches!(
                s.confirmation_status,
                Some(TransactionConfirmationStatus::Confirmed | TransactionConfirmationStatus::Finalized)
            ) || (s.confirmation_status.is_none() && s.confirmations.is_none());
            match (&s.err, done) {
                (Some(e), _) => Some(Err(e.to_string())),
                (None, true) => Some(Ok(())),
                (None, false) => None,
            }
        }))
    }

    async fn blockhash_valid(&self, t: &CheckedSolTransfer) -> Result<bool, ClientError> {
        let h = *t.tx.message.recent_blockhash();
        self.rpc.is_blockhash_valid(&h, CommitmentConfig::confirmed()).await
    }

    /// Waits for `sig` to be confirmed: settled, failed (nothing charged), expired (its blockhash
    /// died unlanded: nothing charged), or still unknown at the deadline (pending).
    async fn confirm(&self, t: &CheckedSolTransfer, sig: Signature) -> Result<SettleOutcome, ChainError> {
        let tx = sig.to_string();
        let deadline = Instant::now() + self.opts.confirm_timeout;
        let mut polls = 0u32;
        loop {
            match self.landed(&sig).await {
                Ok(Some(Ok(_))) => return Ok(SettleOutcome::Settled { tx, gas: 0 }),
                Ok(Some(Err(e))) => {
                    return Err(Rejection::new(
                        exact::reason::FAILED,
                        format!("the transfer failed on chain ({e}); nothing was charged"),
                    )
                    .with_payer(t.authority.to_string())
                    .into())
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %crate::redact::text(&e.to_string()), "signature status unavailable; will ask again")
                }
            }
            polls += 1;
            // Its blockhash gone and still not landed: it never can (the status is asked again
            // after the blockhash check, so one that landed meanwhile is not missed).
            if polls % 5 == 0 && matches!(self.blockhash_valid(t).await, Ok(false)) {
                if let Ok(Some(Ok(_))) = self.landed(&sig).await {
                    return Ok(SettleOutcome::Settled { tx, gas: 0 });
                }
                return Err(Rejection::new(
                    exact::reason::FAILED,
                    "the transaction's blockhash expired before it landed; nothing was charged; sign a new one",
                )
                .with_payer(t.authority.to_string())
                .into());
            }
            if Instant::now() >= deadline {
                tracing::warn!(network = %self.network.name, %tx, "not confirmed within the confirmation timeout; recorded as pending");
                return Ok(SettleOutcome::Pending { tx });
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    /// A simulation's failure as the client's reason, with the program's own line.
    fn simulation_failed(t: &CheckedSolTransfer, err: &str, logs: &[String]) -> ChainError {
        let line = logs
            .iter()
            .rev()
            .find(|l| l.contains("Error") || l.contains("error") || l.contains("failed"))
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        let text: String = crate::redact::text(&format!("{err}{line}")).chars().take(240).collect();
        let r = if text.contains("insufficient funds") || text.contains("custom program error: 0x1") {
            reason::INSUFFICIENT_FUNDS
        } else {
            exact::reason::SIMULATION
        };
        Rejection::new(r, format!("the transfer would fail: {text}"))
            .with_payer(t.authority.to_string())
            .into()
    }
}

/// Whether a failed RPC call may have reached the node (its answer lost): only a refused
/// connection proves it did not.
fn maybe_sent(e: &ClientError) -> bool {
    match e.kind() {
        ErrorKind::Reqwest(r) => !r.is_connect(),
        ErrorKind::RpcError(RpcError::RpcResponseError { .. }) => false,
        _ => true,
    }
}

#[async_trait]
impl Chain for SolanaChain {
    fn network(&self) -> &Arc<Network> {
        &self.network
    }

    fn check_offline(
        &self,
        offer: &Offer,
        amount: AmountMatch,
        payment: &PaymentPayload,
        _now: u64,
    ) -> Result<Checked, Rejection> {
        #[derive(serde::Deserialize)]
        struct Payload<'a> {
            #[serde(borrow)]
            transaction: std::borrow::Cow<'a, str>,
        }
        let p: Payload<'_> = serde_json::from_str(payment.payload.get()).map_err(|e| {
            Rejection::new(
                reason::INVALID_PAYLOAD,
                format!("payload is not {{\"transaction\": \"<base64>\"}}: {e}"),
            )
        })?;
        // The fee payer the client was told: a v2 client echoes the requirement it accepted.
        if let Some(fp) = payment
            .accepted
            .as_ref()
            .and_then(|a| a.extra.as_ref())
            .and_then(|e| e.get("feePayer"))
            .and_then(|v| v.as_str())
        {
            if fp != self.fee_payer.to_string() {
                return Err(Rejection::new(
                    exact::reason::FEE_PAYER_NOT_OURS,
                    format!(
                        "extra.feePayer {fp} is not this gateway's fee payer ({})",
                        self.fee_payer
                    ),
                ));
            }
        }
        let pay_to = Pubkey::from_str(&offer.pay_to)
            .map_err(|_| Rejection::new(reason::UNEXPECTED_VERIFY, "route payTo is not a Solana address"))?;
        let price = u64::try_from(offer.amount)
            .map_err(|_| Rejection::new(reason::UNEXPECTED_VERIFY, "route price does not fit a Solana amount"))?;
        let want = exact::Expected {
            mint: &self.mint,
            pay_to: &pay_to,
            amount: price,
            amount_match: amount,
            decimals: self.network.decimals,
            fee_payer: &self.fee_payer,
            memo: offer.extra.get("memo").and_then(|m| m.as_str()),
        };
        let tx = exact::decode(&p.transaction)?;
        exact::check(tx, &want, &self.opts.limits).map(|t| Checked::Solana(Box::new(t)))
    }

    fn from_stored(&self, stored: &str) -> Result<Checked, String> {
        let tx = exact::decode(stored).map_err(|r| r.detail)?;
        let message = tx.message.serialize();
        let keys = tx.message.static_account_keys();
        let ix = tx.message.instructions().get(2).ok_or("no transfer instruction")?;
        let key = |i: usize| -> Result<Pubkey, String> {
            ix.accounts
                .get(i)
                .and_then(|&a| keys.get(a as usize))
                .copied()
                .ok_or_else(|| "malformed transfer".to_string())
        };
        let amount = ix
            .data
            .get(1..9)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or("malformed transfer")?;
        Ok(Checked::Solana(Box::new(CheckedSolTransfer {
            source: key(0)?,
            destination: key(2)?,
            authority: key(3)?,
            amount,
            message,
            tx,
        })))
    }

    fn settle_unavailable(&self) -> Option<String> {
        self.signer.is_none().then(|| self.no_signer.clone())
    }

    async fn check_onchain(&self, c: &Checked) -> Result<(), ChainError> {
        let t = Self::transfer(c);
        let keys = [t.source, t.destination];
        let accounts = self.rpc.get_multiple_accounts(&keys);
        // Simulated as it will be sent: co-signed, signatures checked, its own blockhash.
        let (tx, _) = match self.cosigned(t) {
            Ok(x) => x,
            // Facilitator mode has no key: the facilitator simulates.
            Err(_) => (t.tx.clone(), Signature::default()),
        };
        let cfg = RpcSimulateTransactionConfig {
            sig_verify: self.signer.is_some(),
            replace_recent_blockhash: false,
            commitment: Some(CommitmentConfig::confirmed()),
            encoding: Some(UiTransactionEncoding::Base64),
            ..Default::default()
        };
        let sim = self.rpc.simulate_transaction_with_config(&tx, cfg);
        let (accounts, sim) = tokio::join!(accounts, sim);
        let accounts = accounts.map_err(|e| self.unreachable("the token account check", e))?;
        let payer = t.authority.to_string();
        if accounts.first().is_none_or(|a| a.is_none()) {
            return Err(Rejection::new(
                reason::INSUFFICIENT_FUNDS,
                format!("the payer's USDC account {} does not exist", t.source),
            )
            .with_payer(payer)
            .into());
        }
        if accounts.get(1).is_none_or(|a| a.is_none()) {
            return Err(Rejection::new(
                exact::reason::RECIPIENT,
                format!(
                    "the payee's USDC account {} does not exist yet; the payee must create it",
                    t.destination
                ),
            )
            .with_payer(payer)
            .into());
        }
        let sim = sim.map_err(|e| self.unreachable("the simulation", e))?.value;
        if let Some(err) = &sim.err {
            return Err(Self::simulation_failed(
                t,
                &err.to_string(),
                sim.logs.as_deref().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    async fn settle_reporting(
        &self,
        c: &Checked,
        sent: Option<tokio::sync::oneshot::Sender<String>>,
    ) -> Result<SettleOutcome, ChainError> {
        let t = Self::transfer(c);
        let (tx, sig) = self.cosigned(t)?;
        let cfg = RpcSendTransactionConfig {
            // Simulated (with signature checks) in verification; a preflight would only repeat it.
            skip_preflight: true,
            encoding: Some(UiTransactionEncoding::Base64),
            ..Default::default()
        };
        match self.rpc.send_transaction_with_config(&tx, cfg).await {
            Ok(_) => {}
            Err(e) if maybe_sent(&e) => {
                tracing::warn!(network = %self.network.name, tx = %sig, error = %crate::redact::text(&e.to_string()), "the Solana node went away while a settlement was sent; recorded pending");
                return Err(ChainError::InDoubt {
                    tx: Some(sig.to_string()),
                    detail: format!("the {} node went away while the transfer was sent", self.network.name),
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::RpcError(RpcError::RpcResponseError { .. })) => {
                let text = e.to_string();
                // Sent before (a retry of the same message): its status decides.
                if text.contains("AlreadyProcessed") || text.contains("already been processed") {
                    return self.confirm(t, sig).await;
                }
                // The node's own words stay in the log; the client gets the reason alone.
                tracing::warn!(network = %self.network.name, why = %crate::redact::text(&text), "the Solana node refused a settlement");
                return Err(Rejection::new(
                    exact::reason::SIMULATION,
                    format!(
                        "the {} node refused the transfer; nothing was charged",
                        self.network.name
                    ),
                )
                .with_payer(t.authority.to_string())
                .into());
            }
            Err(e) => return Err(self.unreachable("settlement", e)),
        }
        if let Some(s) = sent {
            let _ = s.send(sig.to_string());
        }
        self.confirm(t, sig).await
    }

    async fn await_sent(&self, c: &Checked, tx: &str) -> Result<SettleOutcome, ChainError> {
        let t = Self::transfer(c);
        let sig = Signature::from_str(tx)
            .map_err(|_| ChainError::Unavailable(format!("'{tx}' is not a Solana signature")))?;
        self.confirm(t, sig).await
    }

    fn signer(&self) -> Option<String> {
        Some(self.fee_payer.to_string())
    }

    async fn check_signer_funds(&self) -> Option<Result<(), String>> {
        self.signer.as_ref()?;
        let (net, fp) = (&self.network.name, self.fee_payer.to_string());
        let min = self.opts.min_fee_payer_lamports;
        match self.rpc.get_balance(&self.fee_payer).await {
            Ok(l) => {
                crate::metrics::METRICS
                    .signer_balance
                    .with_label_values(&[net])
                    .set(l.min(i64::MAX as u64) as i64);
                if l < min {
                    Some(Err(format!("the fee payer {fp} holds {l} lamports, under networks.{net}.min_fee_payer_lamports ({min}): fund it with SOL")))
                } else {
                    Some(Ok(()))
                }
            }
            Err(e) => {
                tracing::debug!(error = %crate::redact::text(&e.to_string()), "fee payer balance");
                Some(Err(format!(
                    "the fee payer's balance cannot be read; check networks.{net}.rpc_url"
                )))
            }
        }
    }

    async fn ping(&self) -> Result<(), String> {
        self.rpc.get_slot().await.map(|_| ()).map_err(|_| {
            format!(
                "the {} RPC does not answer (networks.{}.rpc_url)",
                self.network.name, self.network.name
            )
        })
    }

    async fn status(&self, c: &Checked, tx: Option<&str>, _now: u64) -> Result<ChainStatus, ChainError> {
        let t = Self::transfer(c);
        let sig = match tx.and_then(|s| Signature::from_str(s).ok()).or_else(|| self.id(t)) {
            Some(s) => s,
            None => return Ok(ChainStatus::Unspent),
        };
        // Blockhash first, then the status: a transaction that lands between the two is seen.
        let valid = self
            .blockhash_valid(t)
            .await
            .map_err(|e| self.unreachable("reconciliation", e))?;
        let landed = self
            .landed(&sig)
            .await
            .map_err(|e| self.unreachable("reconciliation", e))?;
        Ok(match landed {
            Some(Ok(_)) => ChainStatus::Spent {
                tx: Some(sig.to_string()),
            },
            // Landed and failed, or can no longer land: nothing moved, and nothing ever will.
            Some(Err(_)) => ChainStatus::Expired,
            None if !valid => ChainStatus::Expired,
            None if tx.is_some() => ChainStatus::InFlight { tx: sig.to_string() },
            None => ChainStatus::Unspent,
        })
    }

    async fn proof(&self, tx: &str, pay_to: &str) -> Result<Proof, ProofError> {
        let sig = Signature::from_str(tx).map_err(|_| {
            ProofError::Malformed(format!(
                "'{tx}' is not a Solana transaction signature (base58, 64 bytes)"
            ))
        })?;
        let cfg = RpcTransactionConfig {
            encoding: Some(UiTransactionEncoding::JsonParsed),
            commitment: Some(CommitmentConfig::confirmed()),
            max_supported_transaction_version: Some(0),
        };
        let got = match self.rpc.get_transaction_with_config(&sig, cfg).await {
            Ok(t) => t,
            Err(e) if e.to_string().contains("invalid type: null") => return Err(ProofError::NotFound),
            Err(e) => {
                tracing::warn!(network = %self.network.name, error = %crate::redact::text(&e.to_string()), "Solana RPC failed during a proof");
                return Err(ProofError::Unavailable(format!(
                    "the {} network cannot be reached right now",
                    self.network.name
                )));
            }
        };
        let m = proof::moved(&got, &self.network.asset, pay_to)?;
        // Rooted (finalized) counts as the deepest confirmation Solana reports.
        let confirmations = match self.rpc.get_signature_statuses_with_history(&[sig]).await {
            Ok(r) => match r.value.into_iter().next().flatten() {
                Some(s) => s.confirmations.map(|c| c as u64 + 1).unwrap_or(32),
                None => 1,
            },
            Err(_) => 1,
        };
        Ok(Proof {
            // The canonical base58, so that one transaction is consumed once however it was written.
            tx: sig.to_string(),
            from: m.from.unwrap_or_default(),
            to: pay_to.to_string(),
            amount: alloy::primitives::U256::from(m.amount),
            confirmations,
            block_time: m.block_time.unwrap_or_default().max(0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keypairs_in_both_formats() {
        let k = Keypair::new_from_array([3; 32]);
        let b58 = k.to_base58_string();
        assert_eq!(parse_keypair(&b58).unwrap().pubkey(), k.pubkey());
        let json = serde_json::to_string(&k.to_bytes().to_vec()).unwrap();
        assert_eq!(parse_keypair(&json).unwrap().pubkey(), k.pubkey());
        assert!(parse_keypair("[1,2,3]").unwrap_err().contains("64 bytes"));
        assert!(parse_keypair("0x1234").is_err());
    }
}
