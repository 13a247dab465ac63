//! The payment pipeline, top to bottom:
//! decode → match the route's offer → offline checks → replay claim → on-chain check → settle → record.
//!
//! The proxy and the management API ask this module what to do and act on the answer; HTTP details
//! live with them. How a payment reaches the chain is one [`Settler`], chosen at start.

pub mod exposure;
pub mod idempotency;
pub mod settle;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chains::evm::relayer::Relayer;
use crate::chains::evm::{EvmChain, EvmOptions};
use crate::chains::{Chain, ChainError, ChainStatus, Checked, Rejection, ReplayKey, SettleOutcome};
use crate::clock::Clock;
use crate::config::{NetworkSettings, Settings, Settlement};
use crate::facilitator::FacilitatorClient;
use crate::store::{Attempt, AttemptLog, Counted, Delivery, NewClaim, Outcome, PaymentState, Store};
use crate::tenant::{Account, AnswerWhen, Pricing, SettleTiming};
use crate::x402::{self, reason, DecodeError, Family, Offer, PaymentPayload, SettleResponse, Version};
use exposure::Exposure;
use settle::Settler;

/// Why a paid request is not forwarded. Mapped to HTTP in one place (`proxy::respond`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The header could not be read: 400, nothing recorded as paid.
    #[error("{0}")]
    Malformed(String),
    /// A check failed: 402 with the reason and the requirements again.
    #[error(transparent)]
    Rejected(Rejection),
    /// Tollgate cannot take payments right now (chain RPC, relayer, database): 503, nothing charged.
    #[error("{0}")]
    Unavailable(String),
    /// The payment may have been charged but its settlement is not confirmed (a send or a
    /// facilitator whose outcome is unknown, or an earlier request still settling it). Recorded
    /// pending and reconciled from the chain; the same header, sent again, is served once it settles.
    #[error("{detail}")]
    Pending { tx: Option<String>, detail: String },
    /// The tenant's allowance for this period is used up: 429, nothing charged. `reset` is when the
    /// next period starts (unix seconds), `retry_after` the seconds until then by the pipeline's clock.
    #[error("this API's monthly allowance of verified payments is used up")]
    OverQuota { reset: u64, retry_after: u64 },
    /// The gas the operator's relayer may spend on this tenant's settlements this period is used
    /// up: 429 like [`Refusal::OverQuota`], nothing charged.
    #[error("this API's monthly settlement gas is used up")]
    OverGasBudget { reset: u64, retry_after: u64 },
    /// A rate limit (per payer) refused it: 429 with the limit's headers, nothing claimed or charged.
    #[error("{}", .0.detail())]
    RateLimited(crate::ratelimit::Decision),
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal::Malformed(e.to_string())
    }
}

/// A payment that passed verification and holds its claim; it travels with the request.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub version: Version,
    pub pricing: Arc<Pricing>,
    /// The resource URL the 402 named, for v1 facilitators.
    pub asked: crate::x402::Asked,
    pub offer: Offer,
    pub payment: PaymentPayload,
    pub checked: Checked,
    pub key: ReplayKey,
    pub settle: SettleTiming,
    /// When the request is answered relative to the settlement.
    pub answer: AnswerWhen,
    /// The settlement, once there is one.
    pub outcome: Option<SettleOutcome>,
    /// The metered tenant whose gas use a settlement adds to.
    pub metered: Option<String>,
}

impl Accepted {
    pub fn payer(&self) -> String {
        self.checked.payer()
    }

    /// The `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE` value for this payment.
    pub fn settle_response(&self) -> SettleResponse {
        SettleResponse {
            // Answered before its settlement: accepted, and the transfer follows (`transaction`
            // names it once the node has it).
            success: self.outcome.is_some(),
            error_reason: None,
            transaction: self.outcome.as_ref().map(|o| o.tx().to_string()).unwrap_or_default(),
            network: self.offer.network_id(self.version),
            payer: Some(self.payer()),
        }
    }
}

/// The payment pipeline: one per process, shared by every request of every tenant. It holds no
/// tenant: each call names the one it works for.
pub struct Payments {
    chains: HashMap<String, Arc<dyn Chain>>,
    settler: Arc<dyn Settler>,
    /// Money answered before its settlement (kept across reloads).
    pub exposure: Arc<Exposure>,
    /// Settlements going on after their request was answered (kept across reloads).
    background: Arc<Background>,
    pub store: Store,
    attempts: AttemptLog,
    pub clock: Arc<dyn Clock>,
    /// Claims this process holds whose settlement has not started ([`Payments::release_unsent`]).
    unsent: std::sync::Mutex<Unsent>,
}

/// Claimed payments no settlement has started for; once `closing`, none starts.
#[derive(Default)]
struct Unsent {
    closing: bool,
    keys: HashSet<ReplayKey>,
}

/// How receipts are awaited.
struct Receipts {
    confirmations: u64,
    timeout: Duration,
    poll: Duration,
}

impl Payments {
    /// Wires chains, settlement and storage. Contacts no chain: a first run works offline.
    pub fn new(
        settings: &Settings,
        store: Store,
        attempts: AttemptLog,
        clock: Arc<dyn Clock>,
    ) -> Result<Payments, String> {
        Payments::reusing(settings, store, attempts, clock, None)
    }

    /// A reload's pipeline: as [`Self::new`], but each network configured exactly as before keeps
    /// its chain (its RPC client, and its relayer's nonces and the batch being formed) from `old`,
    /// whose networks were `old_networks`.
    pub fn reloaded(&self, settings: &Settings, old_networks: &[NetworkSettings]) -> Result<Payments, String> {
        Payments::reusing(
            settings,
            self.store.clone(),
            self.attempts.clone(),
            self.clock.clone(),
            Some((self, old_networks)),
        )
    }

    fn reusing(
        settings: &Settings,
        store: Store,
        attempts: AttemptLog,
        clock: Arc<dyn Clock>,
        old: Option<(&Payments, &[NetworkSettings])>,
    ) -> Result<Payments, String> {
        // The Solana fee payer's key (facilitator mode has none: the facilitator's fee payer signs).
        let (solana_key, solana_hint) = match &settings.settlement {
            Settlement::Local { solana_key, .. } => (
                solana_key.load(),
                format!(
                    "no Solana fee payer key: {}",
                    solana_key.describe(crate::config::SOLANA_KEY)
                ),
            ),
            Settlement::Facilitator { .. } => {
                (Ok(None), "facilitator mode settles through the facilitator".to_string())
            }
        };
        let (settler, key, key_hint, receipts): (Arc<dyn Settler>, _, String, _) = match &settings.settlement {
            Settlement::Local {
                key_source,
                confirmations,
                receipt_timeout_secs,
                receipt_poll_ms,
                ..
            } => (
                Arc::new(settle::Relayed),
                key_source.load()?,
                format!(
                    "no relayer key: {} (or use settlement.mode = \"facilitator\")",
                    key_source.describe("the relayer's private key")
                ),
                Receipts {
                    confirmations: *confirmations,
                    timeout: Duration::from_secs(*receipt_timeout_secs),
                    poll: Duration::from_millis(*receipt_poll_ms),
                },
            ),
            Settlement::Facilitator {
                url,
                token_env,
                timeout,
            } => {
                let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
                (
                    Arc::new(settle::Facilitated(FacilitatorClient::new(url, token, *timeout)?)),
                    None,
                    "facilitator mode settles through the facilitator".into(),
                    // Only reconciliation reads receipts in this mode.
                    Receipts {
                        confirmations: 1,
                        timeout: Duration::from_secs(30),
                        poll: Duration::from_millis(100),
                    },
                )
            }
        };
        let mut chains: HashMap<String, Arc<dyn Chain>> = HashMap::new();
        for ns in &settings.networks {
            let net = ns.network.clone();
            let kept = old
                .filter(|(_, nets)| nets.contains(ns))
                .and_then(|(p, _)| p.chains.get(&net.name));
            if let Some(chain) = kept {
                chains.insert(net.name.clone(), chain.clone());
                continue;
            }
            match net.family {
                Family::Evm => {
                    let relayers = match &key {
                        Some(k) => Ok(Relayer::from_keys(k, net.chain_id)?),
                        None => Err(key_hint.clone()),
                    };
                    let opts = EvmOptions {
                        rpc_url: ns.rpc_url.clone(),
                        rpc_timeout: Duration::from_millis(ns.rpc_timeout_ms),
                        gas_limit: ns.gas_limit,
                        confirmations: receipts.confirmations,
                        receipt_timeout: receipts.timeout,
                        receipt_poll: receipts.poll,
                        max_batch: ns.max_batch,
                        batch_window: Duration::from_millis(ns.batch_window_ms),
                        block_time: Duration::from_millis(ns.block_time_ms),
                    };
                    let chain = EvmChain::new(net.clone(), opts, relayers)?;
                    for a in chain.signers() {
                        tracing::info!(network = %net.name, relayer = %a, "relayer ready");
                    }
                    chains.insert(net.name.clone(), Arc::new(chain));
                }
                #[cfg(feature = "solana")]
                Family::Solana => {
                    use crate::chains::solana::{parse_keypair, Limits, SolanaChain, SolanaOptions};
                    let signer = match &solana_key {
                        Ok(Some(text)) => Ok(parse_keypair(text)
                            .map_err(|e| format!("networks.{}: the Solana fee payer key: {e}", net.name))?),
                        Ok(None) => Err(solana_hint.clone()),
                        Err(e) => return Err(format!("networks.{}: {e}", net.name)),
                    };
                    let opts = SolanaOptions {
                        rpc_url: ns.rpc_url.clone(),
                        rpc_timeout: Duration::from_millis(ns.rpc_timeout_ms),
                        confirm_timeout: receipts.timeout,
                        poll: receipts.poll,
                        limits: Limits {
                            max_compute_units: ns.compute_units_max,
                            max_compute_unit_price: ns.compute_unit_price_max,
                        },
                        min_fee_payer_lamports: ns.min_fee_payer_lamports,
                    };
                    let chain = SolanaChain::new(net.clone(), opts, signer)?;
                    chains.insert(net.name.clone(), Arc::new(chain));
                }
                #[cfg(not(feature = "solana"))]
                Family::Solana => {
                    return Err(format!(
                        "networks.{}: this build has no Solana support (the `solana` feature)",
                        net.name
                    ))
                }
            }
        }
        #[cfg(not(feature = "solana"))]
        let _ = (solana_key, solana_hint);
        let (exposure, background) = match old {
            Some((p, _)) => {
                p.exposure.set_limits(settings.exposure);
                (p.exposure.clone(), p.background.clone())
            }
            None => (Arc::new(Exposure::new(settings.exposure)), Default::default()),
        };
        Ok(Payments {
            chains,
            settler,
            exposure,
            background,
            store,
            attempts,
            clock,
            unsent: Default::default(),
        })
    }

    /// How payments are settled in this process, for logs.
    pub fn settler_name(&self) -> &'static str {
        self.settler.name()
    }

    /// Every configured chain.
    pub fn chains(&self) -> impl Iterator<Item = &Arc<dyn Chain>> {
        self.chains.values()
    }

    pub fn chain(&self, network: &str) -> Option<&Arc<dyn Chain>> {
        self.chains.get(network)
    }

    /// Queues an attempt record (and counts it in the metrics), and logs it as one line (target
    /// `tollgate::request`): tenant, route, outcome, payer, network, amount, transaction and
    /// latencies. Never a key, a secret or the payment header itself.
    pub fn record(&self, a: Attempt) {
        record_attempt(&self.attempts, a);
    }

    /// Waits until the attempt records queued so far are written.
    pub async fn flush_records(&self) {
        self.attempts.flush().await;
    }
}

/// [`Payments::record`], for the work that goes on after a request (a settlement answered early).
fn record_attempt(attempts: &AttemptLog, a: Attempt) {
    {
        crate::metrics::METRICS.attempt(&a);
        let ms = |us: Option<u64>| us.map_or(-1.0, |us| us as f64 / 1000.0);
        tracing::info!(
            target: "tollgate::request",
            tenant = %a.tenant,
            route = %a.route,
            outcome = a.outcome.map_or("unknown", |o| o.as_str()),
            reason = a.reason.as_deref().unwrap_or(""),
            payer = a.payer.as_deref().unwrap_or(""),
            network = a.network.as_deref().unwrap_or(""),
            amount = a.amount.as_deref().unwrap_or(""),
            tx = a.tx_hash.as_deref().unwrap_or(""),
            verify_ms = ms(a.verify_us),
            settle_ms = ms(a.settle_us),
            total_ms = a.total_us as f64 / 1000.0,
            "payment"
        );
        attempts.record(a);
    }
}

impl Payments {
    /// Verifies a payment header for a priced route and claims it; with `settle = "before"` it also
    /// settles. On success the request may be forwarded.
    pub async fn accept(
        &self,
        tenant: Account<'_>,
        pricing: &Arc<Pricing>,
        route: &str,
        asked: &crate::x402::Asked,
        version: Version,
        header: &[u8],
        rec: &mut Attempt,
    ) -> Result<Accepted, Refusal> {
        let payment = x402::decode_payment(version, header)?;
        self.accept_payment(tenant, pricing, route, asked, version, payment, rec)
            .await
    }

    /// [`Self::accept`] for a payment already decoded (the facilitator endpoints receive it as JSON).
    #[allow(clippy::too_many_arguments)]
    pub async fn accept_payment(
        &self,
        tenant: Account<'_>,
        pricing: &Arc<Pricing>,
        route: &str,
        asked: &crate::x402::Asked,
        version: Version,
        payment: PaymentPayload,
        rec: &mut Attempt,
    ) -> Result<Accepted, Refusal> {
        let started = Instant::now();
        rec.x402_version = version.number();
        rec.settle_mode = pricing.settle.as_str();
        rec.network = Some(payment.network().to_string());

        let (offer, chain, checked) = self.offline(pricing, &payment).inspect_err(|r| {
            if let Refusal::Rejected(r) = r {
                rec.payer = r.payer.clone();
            }
        })?;
        let offer = offer.clone();
        rec.payer = Some(checked.payer());
        // Per payer, once its signature is known to be real (a stranger cannot spend another
        // payer's allowance with forged headers), and before anything touches the ledger or a chain.
        if let Some(limits) = tenant.limits {
            limits
                .check(crate::ratelimit::Scope::Payer, tenant.id, &checked.payer())
                .await
                .map_err(Refusal::RateLimited)?;
        }
        rec.amount = Some(checked.amount().to_string());
        let key = checked.replay_key(&offer.network);
        rec.nonce = Some(key.nonce.clone());
        if self.exposure.owes(&key.payer) {
            return Err(Refusal::Rejected(
                Rejection::new(
                    reason::PAYER_OWES,
                    "an earlier payment from this payer was served before its settlement and then failed on chain (its funds had moved); payments from this payer are refused until that one settles (keep the funds in place: it is retried) or its authorization expires",
                )
                .with_payer(checked.payer()),
            ));
        }

        if let Some(why) = self.settler.unavailable(chain.as_ref()) {
            return Err(Refusal::Unavailable(why));
        }

        // Replay guard: the database's primary key lets exactly one request hold this authorization.
        let claim = NewClaim {
            key: &key,
            tenant: tenant.id,
            route,
            pay_to: &offer.pay_to,
            amount: checked.amount().to_string(),
            payload: checked.to_stored(),
            valid_before: checked.valid_before(self.clock.now_secs()),
            now_ms: self.clock.now_ms(),
        };
        let claimed = self.store.claim(&claim).await.map_err(db_unavailable)?;
        let stored = claim.payload;
        let mut accepted = Accepted {
            version,
            pricing: pricing.clone(),
            asked: asked.clone(),
            offer,
            payment,
            checked,
            key,
            settle: pricing.settle,
            answer: pricing.answer,
            outcome: None,
            metered: tenant.quota.map(|_| tenant.id.to_string()),
        };
        if !claimed {
            return self.retried(accepted, route, &stored, rec).await;
        }
        self.unsent
            .lock()
            .expect("unsent lock")
            .keys
            .insert(accepted.key.clone());
        // A hosted tenant's allowance counts payments that passed the offline checks (a real
        // signature, for this price and payee) and are not replays: strangers' junk never burns it.
        // Counted while the chain is asked (neither moves money; both must pass before anything does).
        let counting = async {
            match tenant.quota {
                Some(limit) => self.count(tenant.id, limit, tenant.gas_budget).await,
                None => Ok(()),
            }
        };
        // Settled at once by a settler that simulates the transfer before sending it (the relayer:
        // one simulation per batch): no separate check; the batch being formed may wait for it.
        // A `verified` route answers on the simulation, so it is made first, on its own; a `submitted`
        // one is answered after the send, which the batch's simulation precedes.
        let at_once = pricing.settle == SettleTiming::Before
            && pricing.answer != AnswerWhen::Verified
            && self.settler.settle_checks(chain.as_ref());
        let soon = if at_once { chain.settling_soon() } else { None };
        let checking = async {
            if at_once {
                Ok(())
            } else {
                self.settler.verify(chain.as_ref(), &accepted).await
            }
        };
        let (counted, verified) = tokio::join!(counting, checking);
        if let Err(refusal) = counted {
            self.release(&accepted.key).await;
            return Err(refusal);
        }
        if let Err(e) = verified {
            self.release(&accepted.key).await;
            return Err(chain_refusal(e));
        }
        rec.verify_us = Some(started.elapsed().as_micros() as u64);

        if pricing.settle == SettleTiming::Before {
            drop(soon);
            self.settle(&mut accepted, rec).await?;
        }
        Ok(accepted)
    }

    /// The offline checks alone (offer, time window, amount, payee, signature): no database, no
    /// chain. For work that must not be done for junk (holding a payment identifier).
    pub fn precheck(&self, pricing: &Pricing, payment: &PaymentPayload) -> Result<(), Refusal> {
        self.offline(pricing, payment).map(|_| ())
    }

    /// The route's own offer for the network the client chose (never the client's copy of it),
    /// that network's chain, and the offline checks against the offer.
    fn offline<'p>(
        &self,
        pricing: &'p Pricing,
        payment: &PaymentPayload,
    ) -> Result<(&'p Offer, &Arc<dyn Chain>, Checked), Refusal> {
        let offer = select_offer(pricing, payment)?;
        let chain = self.chains.get(&offer.network.name).ok_or_else(|| {
            Refusal::Unavailable(format!(
                "network {} is offered but not configured in this process",
                offer.network.name
            ))
        })?;
        let checked = chain
            .check_offline(offer, pricing.amount, payment, self.clock.now_secs())
            .map_err(Refusal::Rejected)?;
        Ok((offer, chain, checked))
    }

    /// Counts one verification against a tenant's allowance of this month (`limit` -1: unlimited),
    /// atomically in the database, so that concurrent requests on any number of gateways never
    /// pass it.
    pub async fn count(&self, tenant: &str, limit: i64, gas_budget: i64) -> Result<(), Refusal> {
        let now = self.clock.now_secs() as i64;
        let (period, next) = crate::clock::month_bounds(now);
        let (reset, retry_after) = (next as u64, (next - now).max(1) as u64);
        match self
            .store
            .count_use(tenant, limit, period, gas_budget)
            .await
            .map_err(db_unavailable)?
        {
            Counted::Yes => Ok(()),
            Counted::OverQuota => Err(Refusal::OverQuota { reset, retry_after }),
            Counted::OverGasBudget => Err(Refusal::OverGasBudget { reset, retry_after }),
        }
    }

    /// Settles an accepted payment and records the result in the ledger.
    pub async fn settle(&self, a: &mut Accepted, rec: &mut Attempt) -> Result<(), Refusal> {
        {
            let mut u = self.unsent.lock().expect("unsent lock");
            if u.closing {
                // Shutting down: its claim may already be given back; nothing is sent any more.
                return Err(Refusal::Unavailable(
                    "the gateway is shutting down; nothing was charged, try again".into(),
                ));
            }
            u.keys.remove(&a.key);
        }
        let started = Instant::now();
        let Some(chain) = self.chains.get(&a.offer.network.name).cloned() else {
            self.release(&a.key).await;
            return Err(Refusal::Unavailable(format!(
                "network {} is not configured",
                a.offer.network.name
            )));
        };
        if a.answer != AnswerWhen::Confirmed {
            let early = self.answer_early(a, &chain, rec).await;
            rec.settle_us = Some(started.elapsed().as_micros() as u64);
            match early {
                Early::Answered => return Ok(()),
                Early::Ended(result) => return self.conclude(a, result, rec).await,
                Early::Refused(r) => return Err(r),
                Early::Bounded => {}
            }
        }
        let result = self.settler.settle(chain.as_ref(), a, None).await;
        rec.settle_us = Some(started.elapsed().as_micros() as u64);
        self.conclude(a, result, rec).await
    }

    /// Answers a payment before its settlement (its route's `answer`), unless that would take its
    /// payer or the gateway past an exposure bound: the settlement goes on in the background, and
    /// the request is answered now (`verified`) or once the node has the transaction (`submitted`).
    async fn answer_early(&self, a: &mut Accepted, chain: &Arc<dyn Chain>, rec: &mut Attempt) -> Early {
        let net = a.offer.network.name.clone();
        let usd = exposure::micro_usd(a.checked.amount(), a.offer.network.decimals);
        if let Err(over) = self.exposure.hold(&a.key, &net, usd) {
            crate::metrics::METRICS.answered_early(&net, "over_limit");
            tracing::debug!(network = %net, payer = %a.key.payer, bound = over.as_str(), "an unsettled-exposure bound is reached; this payment is answered after its receipt");
            return Early::Bounded;
        }
        // Written before the answer: should this process stop before the transfer is sent, the
        // reconciler knows that this payment was served and collects it, never releases it.
        if let Err(e) = self.store.set_delivery(&a.key, Delivery::Served).await {
            self.exposure.release(&a.key);
            self.release(&a.key).await;
            return Early::Refused(db_unavailable(e));
        }
        let verified = a.answer == AnswerWhen::Verified;
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let job = Settling {
            a: a.clone(),
            chain: chain.clone(),
            settler: self.settler.clone(),
            store: self.store.clone(),
            attempts: self.attempts.clone(),
            clock: self.clock.clone(),
            exposure: self.exposure.clone(),
            tenant: rec.tenant.clone(),
            route: rec.route.clone(),
            network_label: rec.network.clone().unwrap_or_default(),
        };
        self.background.spawn(job.run(!verified, reply_tx));
        if verified {
            crate::metrics::METRICS.answered_early(&net, "answered");
            a.outcome = Some(SettleOutcome::Underway { tx: String::new() });
            return Early::Answered;
        }
        match reply_rx.await {
            Ok(Reply::Sent(tx)) => {
                crate::metrics::METRICS.answered_early(&net, "answered");
                rec.tx_hash = Some(tx.clone());
                a.outcome = Some(SettleOutcome::Underway { tx });
                Early::Answered
            }
            // Over before the node had it (refused, unreachable) or before it was reported (a
            // chain that cannot tell): concluded as a `confirmed` payment.
            Ok(Reply::Ended(result)) => {
                self.exposure.release(&a.key);
                Early::Ended(result)
            }
            Err(_) => Early::Refused(Refusal::Pending {
                tx: None,
                detail: "the settlement stopped unexpectedly; it is reconciled from the chain; send the same header again shortly".into(),
            }),
        }
    }

    /// Records a settlement's result in the ledger (the request waited for it).
    async fn conclude(
        &self,
        a: &mut Accepted,
        result: Result<SettleOutcome, ChainError>,
        rec: &mut Attempt,
    ) -> Result<(), Refusal> {
        let now = self.clock.now_ms();
        match result {
            Ok(outcome) => {
                let state = match outcome {
                    SettleOutcome::Settled { .. } => PaymentState::Settled,
                    SettleOutcome::Pending { .. } | SettleOutcome::Underway { .. } => PaymentState::Pending,
                };
                rec.tx_hash = Some(outcome.tx().to_string());
                if let Err(e) = self.store.set_state(&a.key, state, Some(outcome.tx()), now).await {
                    // The transfer happened; the ledger row stays 'claimed' and reconciliation finds it.
                    tracing::error!(error = %e, tx = outcome.tx(), "could not record a settlement; reconciliation will");
                }
                if let (Some(tenant), SettleOutcome::Settled { gas, .. }) = (&a.metered, &outcome) {
                    let (period, _) = crate::clock::month_bounds((now / 1000) as i64);
                    self.attempts.add_gas(&self.store, tenant, period, *gas).await;
                }
                a.outcome = Some(outcome);
                Ok(())
            }
            Err(ChainError::InDoubt { tx, detail }) => {
                rec.tx_hash = tx.clone();
                // Not served, maybe charged: the same header may come back for it ([`Self::retried`]).
                let recorded = self
                    .store
                    .set_state(&a.key, PaymentState::Pending, tx.as_deref(), now)
                    .await;
                let owed = self.store.set_delivery(&a.key, Delivery::Owed).await;
                if let Err(e) = recorded.and(owed) {
                    tracing::error!(error = %e, tx = ?tx, "could not record an in-doubt settlement; reconciliation will");
                }
                Err(Refusal::Pending { tx, detail })
            }
            Err(e) => {
                self.release(&a.key).await;
                Err(chain_refusal(e))
            }
        }
    }

    /// The same authorization came again. It is served only if it is the very same signed payment,
    /// for the same route, owed to its payer (charged or maybe charged, never served); taking it is
    /// atomic, so concurrent retries serve it once. Otherwise it is a replay.
    async fn retried(
        &self,
        mut a: Accepted,
        route: &str,
        stored: &str,
        rec: &mut Attempt,
    ) -> Result<Accepted, Refusal> {
        let duplicate = || {
            Refusal::Rejected(Rejection::new(
                reason::DUPLICATE,
                "this authorization was already used; sign a new one",
            ))
        };
        let Some(row) = self.store.payment(&a.key).await.map_err(db_unavailable)? else {
            // Released between our claim and this read: the client may simply send it again.
            return Err(Refusal::Unavailable(
                "this payment was being released; send it again".into(),
            ));
        };
        if row.payload != stored || row.route != route {
            return Err(duplicate());
        }
        if !self.store.take_owed(&a.key, stored).await.map_err(db_unavailable)? {
            return match (row.state, row.delivery) {
                (PaymentState::Settled, _) | (_, Delivery::Served) => Err(duplicate()),
                // An earlier request holds it and is still settling it.
                _ => Err(Refusal::Pending {
                    tx: row.tx_hash,
                    detail: "this payment is being settled by an earlier request; send the same header again shortly"
                        .into(),
                }),
            };
        }
        // Ours now: bring it to settled before forwarding, whatever the route's timing.
        a.settle = SettleTiming::Before;
        a.answer = AnswerWhen::Confirmed;
        let key = a.key.clone();
        let give_back = |refusal: Refusal| async {
            if let Err(e) = self.store.set_delivery(&key, Delivery::Owed).await {
                tracing::error!(error = %e, "could not give an owed payment back");
            }
            refusal
        };
        if let (PaymentState::Settled, Some(tx)) = (row.state, row.tx_hash.clone()) {
            rec.tx_hash = Some(tx.clone());
            a.outcome = Some(SettleOutcome::Settled { tx, gas: 0 });
            return Ok(a);
        }
        let Some(chain) = self.chains.get(&a.offer.network.name).cloned() else {
            return Err(give_back(Refusal::Unavailable("this network is not configured".into())).await);
        };
        match chain
            .status(&a.checked, row.tx_hash.as_deref(), self.clock.now_secs())
            .await
        {
            Ok(ChainStatus::Spent { tx }) => self.found_on_chain(a, tx.or(row.tx_hash), rec).await,
            // Never landed and never can: nothing was charged.
            Ok(ChainStatus::Expired) => {
                self.store.forget_unlanded(&a.key).await.map_err(db_unavailable)?;
                Err(Refusal::Rejected(Rejection::new(
                    reason::VALID_BEFORE,
                    "this payment expired before it settled; nothing was charged; sign a new one",
                )))
            }
            // The transaction sent for it is still in the node's pool: wait for that one (bounded);
            // sending a second would only race it and burn gas.
            Ok(ChainStatus::InFlight { tx }) => match chain.await_sent(&a.checked, &tx).await {
                Ok(SettleOutcome::Settled { tx, .. }) => self.found_on_chain(a, Some(tx), rec).await,
                _ => {
                    rec.tx_hash = Some(tx.clone());
                    Err(give_back(Refusal::Pending {
                        tx: Some(tx),
                        detail: "the transfer was sent and is not in a block yet; send the same header again shortly"
                            .into(),
                    })
                    .await)
                }
            },
            // Not on chain yet, and nothing of ours in flight: settle it (again). The
            // authorization's nonce lets at most one transfer land, so this cannot charge twice.
            Ok(ChainStatus::Unspent) => match self.settle(&mut a, rec).await {
                Ok(()) => Ok(a),
                // Perhaps the first transfer landed meanwhile (nonce used): the chain decides.
                Err(Refusal::Rejected(r)) => match chain.status(&a.checked, None, self.clock.now_secs()).await {
                    Ok(ChainStatus::Spent { tx }) => self.found_on_chain(a, tx, rec).await,
                    _ => Err(give_back(Refusal::Rejected(r)).await),
                },
                Err(pending @ Refusal::Pending { .. }) => Err(pending),
                Err(other) => Err(give_back(other).await),
            },
            Err(_) => Err(give_back(Refusal::Pending {
                tx: row.tx_hash,
                detail: "the chain cannot be asked about this payment right now; send the same header again shortly"
                    .into(),
            })
            .await),
        }
    }

    /// The chain shows the payment spent: settled in the ledger, and the request may be served.
    async fn found_on_chain(
        &self,
        mut a: Accepted,
        tx: Option<String>,
        rec: &mut Attempt,
    ) -> Result<Accepted, Refusal> {
        let now = self.clock.now_ms();
        self.store
            .set_state(&a.key, PaymentState::Settled, tx.as_deref(), now)
            .await
            .map_err(db_unavailable)?;
        let tx = tx.unwrap_or_default();
        rec.tx_hash = Some(tx.clone());
        a.outcome = Some(SettleOutcome::Settled { tx, gas: 0 });
        Ok(a)
    }

    /// Records how a payment's request ended: [`Delivery::Owed`] when it was charged (or maybe) and
    /// not served, so that the same header may collect it; [`Delivery::Served`] when it was served
    /// while still pending, so that a replay is a duplicate.
    pub async fn delivered(&self, key: &ReplayKey, d: Delivery) {
        if let Err(e) = self.store.set_delivery(key, d).await {
            tracing::error!(error = %e, delivery = d.as_str(), "could not record a payment's delivery");
        }
    }

    /// At shutdown, after the grace period: gives back every claim of this process whose settlement
    /// never started (a settle-after request cut off before its upstream answered, a payment cut off
    /// between its checks and its send), and lets no settlement start afterwards. Those can no
    /// longer be sent by anyone, so they need not wait for their authorization to expire; the ones
    /// whose sending started stay claimed or pending for the reconciler. Returns how many.
    pub async fn release_unsent(&self) -> usize {
        let keys: Vec<ReplayKey> = {
            let mut u = self.unsent.lock().expect("unsent lock");
            u.closing = true;
            u.keys.drain().collect()
        };
        for k in &keys {
            if let Err(e) = self.store.release(k).await {
                tracing::error!(error = %e, "could not give back an unsent claim; reconciliation will once it expires");
            }
        }
        keys.len()
    }

    /// Gives the claim back: nothing was charged.
    pub async fn release(&self, key: &ReplayKey) {
        self.unsent.lock().expect("unsent lock").keys.remove(key);
        if let Err(e) = self.store.release(key).await {
            // Left claimed, reconciliation releases it later; the client can sign a new one meanwhile.
            tracing::error!(error = %e, "could not release a payment claim");
        }
    }

    /// One reconciliation pass over claims and pending payments older than `stale_after`.
    pub async fn reconcile_once(&self, stale_after: Duration) -> Result<usize, String> {
        self.purge_ids().await;
        let now_ms = self.clock.now_ms();
        let rows = self
            .store
            .unfinished(now_ms.saturating_sub(stale_after.as_millis() as u64), 500)
            .await
            .map_err(|e| e.to_string())?;
        let mut resolved = 0;
        for row in rows {
            let Some(chain) = self.chains.values().find(|c| c.network().caip2 == row.key.network) else {
                continue;
            };
            let checked = match chain.from_stored(&row.payload) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable payment in the ledger");
                    continue;
                }
            };
            let status = match chain
                .status(&checked, row.tx_hash.as_deref(), self.clock.now_secs())
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation: chain unavailable; will retry");
                    break;
                }
            };
            // Served before it was on chain (answered early, or served while pending): owed to the
            // payee, so it is collected, and recorded lost if it never can be — never released.
            let served = row.delivery == Delivery::Served;
            let net = chain.network().name.clone();
            let (outcome, tx) = match status {
                ChainStatus::Spent { tx } => {
                    let tx = tx.or(row.tx_hash.clone());
                    self.store
                        .set_state(&row.key, PaymentState::Settled, tx.as_deref(), now_ms)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.collected(&row, &net);
                    tracing::info!(payer = %row.key.payer, tx = tx.as_deref().unwrap_or("?"), "reconciled: payment is on chain");
                    (Outcome::Settled, tx)
                }
                // Served, not on chain, nothing in flight, still valid: send it (again). Its
                // authorization's nonce lets at most one transfer land.
                ChainStatus::Unspent if served => {
                    let Some(result) = self.settler.settle_stored(chain.as_ref(), &checked).await else {
                        continue;
                    };
                    match result {
                        Ok(SettleOutcome::Settled { tx, .. }) => {
                            self.store
                                .set_state(&row.key, PaymentState::Settled, Some(&tx), now_ms)
                                .await
                                .map_err(|e| e.to_string())?;
                            self.collected(&row, &net);
                            tracing::info!(payer = %row.key.payer, %tx, "reconciled: a served payment's transfer was sent and settled");
                            (Outcome::Settled, Some(tx))
                        }
                        Ok(o) => {
                            self.store
                                .set_state(&row.key, PaymentState::Pending, Some(o.tx()), now_ms)
                                .await
                                .map_err(|e| e.to_string())?;
                            continue;
                        }
                        Err(ChainError::InDoubt { tx, .. }) => {
                            self.store
                                .set_state(&row.key, PaymentState::Pending, tx.as_deref(), now_ms)
                                .await
                                .map_err(|e| e.to_string())?;
                            continue;
                        }
                        Err(ChainError::Rejected(r)) => {
                            // Still refused (the payer's funds are not back): failed, and looked at
                            // again next time.
                            self.store
                                .set_state(&row.key, PaymentState::Failed, None, now_ms)
                                .await
                                .map_err(|e| e.to_string())?;
                            if row.state != PaymentState::Failed {
                                self.exposure
                                    .hold_found(&row.key, &net, self.micro_usd(&row, chain.as_ref()));
                                self.exposure.fail(&row.key);
                                crate::metrics::METRICS.answered_early(&net, "failed");
                                tracing::warn!(payer = %row.key.payer, reason = %r.reason, "reconciliation: a served payment's transfer is refused on chain; the payer owes it");
                                (Outcome::Failed, None)
                            } else {
                                tracing::debug!(payer = %row.key.payer, reason = %r.reason, "reconciliation: a failed payment is still refused on chain; will try again");
                                continue;
                            }
                        }
                        Err(ChainError::Unavailable(e)) => {
                            tracing::warn!(error = %e, "reconciliation: cannot settle right now; will retry");
                            break;
                        }
                    }
                }
                // Not on chain yet, but still valid: a transaction sent for it may still land, so
                // releasing it now could charge a payment the ledger calls released. Look again
                // later; once the authorization expires it can no longer land.
                ChainStatus::Unspent | ChainStatus::InFlight { .. } => {
                    tracing::debug!(payer = %row.key.payer, state = row.state.as_str(), "reconciliation: not on chain yet and still valid; will look again");
                    continue;
                }
                ChainStatus::Expired if served => {
                    self.store
                        .set_state(&row.key, PaymentState::Lost, None, now_ms)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.exposure.resolve(&row.key);
                    crate::metrics::METRICS.answered_early(&net, "lost");
                    tracing::warn!(payer = %row.key.payer, amount = %row.amount, "reconciled: a served payment expired before it could be settled; recorded as lost");
                    (Outcome::Lost, row.tx_hash.clone())
                }
                ChainStatus::Expired => {
                    self.store.forget_unlanded(&row.key).await.map_err(|e| e.to_string())?;
                    tracing::info!(payer = %row.key.payer, state = row.state.as_str(), "reconciled: payment never landed; released, nothing charged");
                    (Outcome::Released, row.tx_hash.clone())
                }
            };
            self.record(Attempt {
                at_ms: now_ms,
                tenant: row.tenant.clone(),
                route: row.route.clone(),
                method: "-".into(),
                path: "(reconciliation)".into(),
                x402_version: 0,
                network: Some(row.key.network.clone()),
                payer: Some(row.key.payer.clone()),
                amount: Some(row.amount.clone()),
                nonce: Some(row.key.nonce.clone()),
                tx_hash: tx,
                outcome: Some(outcome),
                reason: Some(format!("reconciled from {}", row.state.as_str())),
                settle_mode: "-",
                ..Default::default()
            });
            resolved += 1;
        }
        self.sync_exposure().await;
        Ok(resolved)
    }

    /// A served payment found settled: no longer exposure, and its payer owes it no more.
    fn collected(&self, row: &crate::store::ClaimRow, net: &str) {
        if row.state == PaymentState::Failed {
            crate::metrics::METRICS.answered_early(net, "collected");
        }
        self.exposure.resolve(&row.key);
    }

    fn micro_usd(&self, row: &crate::store::ClaimRow, chain: &dyn Chain) -> u64 {
        let amount = row.amount.parse().unwrap_or_default();
        exposure::micro_usd(amount, chain.network().decimals)
    }

    /// Brings the exposure up to the ledger: the payers that owe (every gateway's failed payments)
    /// and the served, unsettled payments this process did not answer itself (another gateway's, or
    /// this one's before a restart).
    async fn sync_exposure(&self) {
        match self.store.failed_keys(10_000).await {
            Ok(keys) => self.exposure.sync_owing(keys),
            Err(e) => tracing::warn!(error = %e, "could not read the failed payments; will retry"),
        }
        let Ok(rows) = self.store.answered_unsettled(10_000).await else {
            return;
        };
        let found = rows
            .into_iter()
            .filter_map(|row| {
                let chain = self.chains.values().find(|c| c.network().caip2 == row.key.network)?;
                let usd = self.micro_usd(&row, chain.as_ref());
                Some((row.key, chain.network().name.clone(), usd))
            })
            .collect();
        self.exposure.sync_found(found);
        let (nets, owing) = self.exposure.summary();
        for (network, micro) in nets {
            tracing::info!(%network, unsettled_usd = micro as f64 / 1e6, "answered but not yet settled (unsettled exposure)");
        }
        if owing > 0 {
            tracing::warn!(
                payers = owing,
                "payers refused until their failed payments are collected or expire"
            );
        }
    }

    /// At shutdown: waits (up to `limit`) for the settlements of requests answered before them;
    /// how many were still running.
    pub async fn settling_done(&self, limit: Duration) -> usize {
        self.background.wait(limit).await
    }
}

/// How [`Payments::answer_early`] ended.
enum Early {
    /// The request may be answered; the settlement goes on.
    Answered,
    /// The settlement ended before the request was answered: conclude it as a `confirmed` one.
    Ended(Result<SettleOutcome, ChainError>),
    /// An exposure bound is reached: settle it as a `confirmed` one.
    Bounded,
    Refused(Refusal),
}

/// What a settlement in the background tells the `submitted` request waiting for it.
enum Reply {
    /// The node accepted the transaction: answer.
    Sent(String),
    /// It ended first (before the node had it, or on a chain that does not report sends).
    Ended(Result<SettleOutcome, ChainError>),
}

/// Settlements running after (or while) their request is answered; shutdown waits for them.
#[derive(Default)]
struct Background {
    running: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Background {
    fn spawn(self: &Arc<Self>, work: impl std::future::Future<Output = ()> + Send + 'static) {
        use std::sync::atomic::Ordering;
        self.running.fetch_add(1, Ordering::AcqRel);
        let me = self.clone();
        tokio::spawn(async move {
            work.await;
            if me.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                me.idle.notify_waiters();
            }
        });
    }

    /// Waits (up to `limit`) until none runs; how many still do.
    async fn wait(&self, limit: Duration) -> usize {
        use std::sync::atomic::Ordering;
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        self.running.load(Ordering::Acquire)
    }
}

/// One payment's settlement after its request was answered (or, `submitted`, while it waits for
/// the send): it records the outcome itself. A transfer that fails after the answer is recorded
/// `failed` and its payer owes it ([`Exposure::fail`]); nothing answered is ever released.
struct Settling {
    a: Accepted,
    chain: Arc<dyn Chain>,
    settler: Arc<dyn Settler>,
    store: Store,
    attempts: AttemptLog,
    clock: Arc<dyn Clock>,
    exposure: Arc<Exposure>,
    tenant: String,
    route: String,
    /// The network as the request's record names it (the metrics' label).
    network_label: String,
}

impl Settling {
    /// `reply`: the waiting request (`submitted`), told of the send or of an earlier end; for
    /// `verified` (`wait_for_send` false) the request is answered already.
    async fn run(self, wait_for_send: bool, reply: tokio::sync::oneshot::Sender<Reply>) {
        if !wait_for_send {
            drop(reply);
            let result = self.settler.settle(self.chain.as_ref(), &self.a, None).await;
            return self.finish(result).await;
        }
        let (sent_tx, mut sent_rx) = tokio::sync::oneshot::channel::<String>();
        let (settler, chain, a) = (self.settler.clone(), self.chain.clone(), self.a.clone());
        let settling = settler.settle(chain.as_ref(), &a, Some(sent_tx));
        tokio::pin!(settling);
        let result = tokio::select! {
            biased;
            Ok(tx) = &mut sent_rx => {
                if reply.send(Reply::Sent(tx)).is_err() {
                    // The request went away before its answer: the same header may collect it.
                    let _ = self.store.set_delivery(&self.a.key, Delivery::Owed).await;
                }
                settling.await
            }
            result = &mut settling => {
                match reply.send(Reply::Ended(result)) {
                    Ok(()) => return,
                    // Nobody waits: concluded here, as the request would have.
                    Err(Reply::Ended(result)) => return self.unanswered(result).await,
                    Err(Reply::Sent(_)) => return,
                }
            }
        };
        self.finish(result).await;
    }

    /// Moves the payment's ledger row to `state` (the reconciler finds it if this fails).
    async fn write(&self, state: PaymentState, tx: Option<&str>) {
        if let Err(e) = self.store.set_state(&self.a.key, state, tx, self.clock.now_ms()).await {
            tracing::error!(error = %e, state = state.as_str(), "could not record a settlement; reconciliation will");
        }
    }

    /// A `submitted` payment whose request went away before the node had it: recorded as its
    /// request would have, and owed to the same header when it may have been charged.
    async fn unanswered(self, result: Result<SettleOutcome, ChainError>) {
        let key = &self.a.key;
        self.exposure.release(key);
        let (state, tx) = match &result {
            Ok(o @ SettleOutcome::Settled { .. }) => (PaymentState::Settled, Some(o.tx())),
            Ok(o) => (PaymentState::Pending, Some(o.tx())),
            Err(ChainError::InDoubt { tx, .. }) => (PaymentState::Pending, tx.as_deref()),
            Err(_) => {
                if let Err(e) = self.store.release(key).await {
                    tracing::error!(error = %e, "could not release a payment claim");
                }
                return;
            }
        };
        self.write(state, tx).await;
        if let Err(e) = self.store.set_delivery(key, Delivery::Owed).await {
            tracing::error!(error = %e, "could not record a payment as owed");
        }
    }

    /// Records how the settlement of an answered payment ended.
    async fn finish(self, result: Result<SettleOutcome, ChainError>) {
        let a = &self.a;
        let key = &a.key;
        let net = a.offer.network.name.as_str();
        let now = self.clock.now_ms();
        let result = match result {
            // The chain decides: the authorization may have been spent by another transaction (anyone
            // may send a signed authorization), which paid all the same.
            Err(ChainError::Rejected(r)) => match self.chain.status(&a.checked, None, self.clock.now_secs()).await {
                Ok(ChainStatus::Spent { tx }) => Ok(SettleOutcome::Settled {
                    tx: tx.unwrap_or_default(),
                    gas: 0,
                }),
                _ => Err(ChainError::Rejected(r)),
            },
            other => other,
        };
        match result {
            Ok(SettleOutcome::Settled { tx, gas }) => {
                self.write(PaymentState::Settled, Some(&tx)).await;
                if let (Some(tenant), true) = (&a.metered, gas > 0) {
                    let (period, _) = crate::clock::month_bounds((now / 1000) as i64);
                    self.attempts.add_gas(&self.store, tenant, period, gas).await;
                }
                self.exposure.release(key);
                let m = &crate::metrics::METRICS;
                m.answered_early(net, "settled");
                m.settled_amount(&self.tenant, &self.network_label, &a.checked.amount().to_string());
                tracing::debug!(network = %net, payer = %key.payer, %tx, "answered payment settled");
            }
            // Sent, no receipt in time, or the node went away mid-send: pending; it stays held
            // until reconciliation settles it.
            Ok(o) => self.write(PaymentState::Pending, Some(o.tx())).await,
            Err(ChainError::InDoubt { tx, .. }) => self.write(PaymentState::Pending, tx.as_deref()).await,
            Err(ChainError::Rejected(r)) => {
                self.write(PaymentState::Failed, None).await;
                self.exposure.fail(key);
                crate::metrics::METRICS.answered_early(net, "failed");
                tracing::warn!(network = %net, payer = %key.payer, amount = %a.checked.amount(), reason = %r.reason, detail = %r.detail, "a payment answered before its settlement failed on chain; it is retried while its authorization is valid, and the payer's payments are refused until then");
                record_attempt(
                    &self.attempts,
                    Attempt {
                        at_ms: now,
                        tenant: self.tenant.clone(),
                        route: self.route.clone(),
                        method: "-".into(),
                        path: "(settlement after the answer)".into(),
                        x402_version: a.version.number(),
                        network: Some(self.network_label.clone()),
                        payer: Some(a.payer()),
                        amount: Some(a.checked.amount().to_string()),
                        nonce: Some(key.nonce.clone()),
                        outcome: Some(Outcome::Failed),
                        reason: Some(format!("{}: {}", r.reason, r.detail)),
                        settle_mode: a.answer.as_str(),
                        ..Default::default()
                    },
                );
            }
            Err(ChainError::Unavailable(m)) => {
                // Nothing was sent (the RPC, the relayer's funds, a shutdown): the ledger row stays
                // claimed and served, and reconciliation sends it.
                tracing::warn!(network = %net, payer = %key.payer, why = %m, "the settlement of an answered payment could not be sent; reconciliation will send it");
            }
        }
    }
}

/// The route's offer for the scheme and network the client chose.
fn select_offer<'p>(pricing: &'p Pricing, payment: &PaymentPayload) -> Result<&'p Offer, Refusal> {
    let offered: Vec<&str> = pricing.offers.iter().map(|o| o.network.name.as_str()).collect();
    if payment.scheme() != "exact" {
        return Err(Refusal::Rejected(Rejection::new(
            reason::INVALID_SCHEME,
            format!("scheme '{}' is not offered here; use 'exact'", payment.scheme()),
        )));
    }
    pricing.offer_for(payment.network()).ok_or_else(|| {
        Refusal::Rejected(Rejection::new(
            reason::INVALID_NETWORK,
            format!(
                "network '{}' is not accepted on this route; accepted: {}",
                payment.network(),
                offered.join(", ")
            ),
        ))
    })
}

fn chain_refusal(e: ChainError) -> Refusal {
    match e {
        ChainError::Rejected(r) => Refusal::Rejected(r),
        ChainError::Unavailable(m) => Refusal::Unavailable(m),
        ChainError::InDoubt { tx, detail } => Refusal::Pending { tx, detail },
    }
}

/// The ledger cannot be read or written: 503, detail in the log only.
fn db_unavailable(e: crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "the payment database is unavailable; payments are refused (503) until it is back");
    Refusal::Unavailable("payments are unavailable right now (ledger); nothing was charged, try again later".into())
}

/// The outcome to record for a refusal.
pub fn refusal_outcome(r: &Refusal) -> (Outcome, String) {
    match r {
        Refusal::Malformed(m) => (Outcome::Rejected, format!("malformed: {m}")),
        Refusal::Rejected(rej) if rej.reason == reason::DUPLICATE => (Outcome::Duplicate, rej.reason.to_string()),
        Refusal::Rejected(rej) => (Outcome::Rejected, rej.reason.to_string()),
        Refusal::Unavailable(m) => (Outcome::Unavailable, m.clone()),
        Refusal::Pending { detail, .. } => (Outcome::Pending, detail.clone()),
        Refusal::OverQuota { .. } => (Outcome::Rejected, "over_quota".into()),
        Refusal::OverGasBudget { .. } => (Outcome::Rejected, "over_gas_budget".into()),
        Refusal::RateLimited(_) => (Outcome::Rejected, "rate_limited".into()),
    }
}
