//! Batched settlement: concurrent payments on one chain share a transaction.
//!
//! Settlements queue here; one loop per chain sends what has queued as a single transaction — a
//! plain `transferWithAuthorization` when there is one, a Multicall3 `aggregate3` of them (each
//! allowed to fail on its own) when there are several — and the next batch forms while that one is
//! sent. Nothing waits for a batch to fill: an idle gateway sends each payment at once, a busy one
//! sends fewer, fuller transactions (less gas per payment, fewer blocks for the node to build).
//! Each payment is then judged by its own `AuthorizationUsed` and `Transfer` logs in the receipt.
//! Chains without Multicall3 at its canonical address get one transaction per payment, sent in parallel.
//!
//! With the chain's block interval known (`networks.<name>.block_time_ms`), a busy relayer keeps to
//! the block rhythm: while its last batch waits to be mined, payments gather; once it is mined (a
//! block seen through its receipt), the next batch goes out a little before the next block is due,
//! so that each block carries one full transaction instead of the several small ones sent as they
//! formed. Waiting until just before the block does not delay inclusion. An idle relayer (nothing in
//! flight, no block seen lately) sends at once, and a chain that mines on arrival (a receipt back in
//! a fraction of the interval: a dev node) is recognised and never waited for. A batch carrying a
//! payment whose request is answered on the send (`answer = "submitted"`) is not held: that answer
//! is the point of the mode, and more transactions per block are its price.
//!
//! With several relayer keys, each batch goes out from the key with the fewest transactions waiting
//! to be mined (the first of them on a tie, then the next in turn): one account's limits — a node's
//! slots per sender in its pool, one nonce sequence that a stuck transaction holds up — no longer
//! bound the chain's throughput, and a busy block can carry a full batch from each key.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{address, Address, Bytes, B256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol;
use alloy::sol_types::{SolCall, SolError};
use tokio::sync::{oneshot, Notify, OnceCell};

use super::receipts::ReceiptWatcher;
use super::relayer::{Relayer, SendError};

/// Multicall3, deployed at this address on Base, Ethereum, Polygon, Avalanche and most EVM chains.
pub const MULTICALL3: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");

sol! {
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
    }
}

/// Gas for the batch transaction itself, on top of its calls.
const BATCH_OVERHEAD_GAS: u64 = 40_000;

/// A settlement's transaction and, if it came in time, its receipt.
#[derive(Debug, Clone)]
pub struct Landed {
    pub tx: B256,
    pub receipt: Option<TransactionReceipt>,
    /// How many payments the transaction carried.
    pub batch_size: usize,
    /// The key that sent it.
    pub relayer: Arc<Relayer>,
}

struct Job {
    calldata: Bytes,
    reply: oneshot::Sender<Result<Landed, SendError>>,
    /// Told the transaction's hash once the node accepted it (before its receipt).
    sent: Option<oneshot::Sender<String>>,
}

/// What the batcher needs to send and to wait.
pub struct BatchOptions {
    /// The network's name, for the log.
    pub network: String,
    pub asset: Address,
    pub gas_per_transfer: u64,
    pub max_batch: usize,
    /// How long a batch may wait for payments still being checked on chain; with none on their
    /// way it is sent at once.
    pub window: Duration,
    pub receipt_timeout: Duration,
    pub confirmations: u64,
    /// The chain's block interval; zero: not known, batches go out as they form.
    pub block_time: Duration,
}

/// What the batcher has seen of the chain's blocks.
#[derive(Default)]
struct Rhythm {
    /// Batches sent whose receipt has not come back.
    in_flight: usize,
    /// When the last of them was mined (its receipt arrived).
    last_block: Option<std::time::Instant>,
    /// The chain mines on arrival: a receipt came back in under a quarter of the interval.
    instant: bool,
}

/// How long a relayer refused for want of gas is tried after the others.
const EMPTY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

struct Inner {
    provider: RootProvider,
    /// At least one; each with its transactions sent and not yet mined.
    relayers: Vec<(Arc<Relayer>, std::sync::atomic::AtomicUsize)>,
    /// The next relayer in turn, among those equally idle.
    turn: std::sync::atomic::AtomicUsize,
    /// When each relayer was last refused for want of gas (tried last for a while after).
    empty: Vec<Mutex<Option<std::time::Instant>>>,
    receipts: Arc<ReceiptWatcher>,
    opts: BatchOptions,
    queue: Mutex<VecDeque<Job>>,
    wake: Notify,
    /// Payments being checked on chain now, whose settlement will most likely follow at once.
    coming: std::sync::atomic::AtomicUsize,
    multicall: OnceCell<bool>,
    rhythm: Mutex<Rhythm>,
    /// Signalled when a batch's receipt comes back (a block was seen).
    mined: Notify,
}

/// One chain's settlement queue.
pub struct Batcher {
    inner: Arc<Inner>,
    started: std::sync::Once,
}

impl Batcher {
    /// `relayers` must not be empty.
    pub fn new(
        provider: RootProvider,
        relayers: Vec<Arc<Relayer>>,
        receipts: Arc<ReceiptWatcher>,
        opts: BatchOptions,
    ) -> Self {
        assert!(!relayers.is_empty(), "a batcher needs a relayer");
        Batcher {
            inner: Arc::new(Inner {
                provider,
                empty: relayers.iter().map(|_| Mutex::new(None)).collect(),
                relayers: relayers.into_iter().map(|r| (r, Default::default())).collect(),
                turn: Default::default(),
                receipts,
                opts,
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                coming: Default::default(),
                multicall: OnceCell::new(),
                rhythm: Mutex::new(Rhythm::default()),
                mined: Notify::new(),
            }),
            started: std::sync::Once::new(),
        }
    }

    /// Marks a payment on its way (being checked on chain) until the guard is dropped: a batch
    /// gathering waits for such payments, and only for them.
    pub fn coming(&self) -> Coming {
        self.inner.coming.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Coming(self.inner.clone())
    }

    /// Sends one `transferWithAuthorization` (alone or with others) and waits for its receipt;
    /// `sent` is told the transaction's hash as soon as the node has accepted it.
    pub async fn settle(&self, calldata: Bytes, sent: Option<oneshot::Sender<String>>) -> Result<Landed, SendError> {
        self.started.call_once(|| {
            tokio::spawn(self.inner.clone().run());
        });
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue
            .lock()
            .expect("batch lock")
            .push_back(Job { calldata, reply, sent });
        self.inner.wake.notify_one();
        rx.await
            .map_err(|_| SendError::Unreachable("the settlement loop stopped".into()))?
    }
}

/// The `aggregate3` call of a batch's transfers, each allowed to fail on its own.
fn aggregate(asset: Address, jobs: &[Job]) -> Vec<u8> {
    let calls = jobs
        .iter()
        .map(|j| IMulticall3::Call3 {
            target: asset,
            allowFailure: true,
            callData: j.calldata.clone(),
        })
        .collect();
    IMulticall3::aggregate3Call { calls }.abi_encode()
}

/// A payment on its way to the batcher (see [`Batcher::coming`]).
pub struct Coming(Arc<Inner>);

impl Drop for Coming {
    fn drop(&mut self) {
        if self.0.coming.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            // The last one on its way: a gathering batch need not wait any longer.
            self.0.wake.notify_one();
        }
    }
}

impl Inner {
    async fn run(self: Arc<Self>) {
        let max = self.opts.max_batch.max(1);
        loop {
            let mut jobs: Vec<Job> = self.take(max);
            if jobs.is_empty() {
                self.wake.notified().await;
                continue;
            }
            // Payments still being checked will want to settle in a moment: let the batch wait
            // for them, up to the window (fewer, fuller transactions: less gas per payment and
            // fewer blocks for the node to build). Nothing on its way: send at once.
            let until = tokio::time::Instant::now() + self.opts.window;
            while jobs.len() < max && !self.opts.window.is_zero() {
                let more = self.take(max - jobs.len());
                if more.is_empty() {
                    if self.coming.load(std::sync::atomic::Ordering::Acquire) == 0 {
                        break;
                    }
                    if tokio::time::timeout_at(until, self.wake.notified()).await.is_err() {
                        break;
                    }
                }
                jobs.extend(more);
            }
            if self.opts.max_batch > 1 && self.multicall_deployed().await {
                self.keep_to_blocks(&mut jobs, max).await;
                // Serialised on purpose: while this batch is sent, the next one gathers.
                self.clone().send(jobs).await;
            } else {
                for job in jobs {
                    tokio::spawn(self.clone().send(vec![job]));
                }
            }
        }
    }

    /// With the block interval known, holds the batch until just before the next block is due (see
    /// the module's notes), taking the payments that arrive meanwhile, up to `max`.
    async fn keep_to_blocks(&self, jobs: &mut Vec<Job>, max: usize) {
        let bt = self.opts.block_time;
        if bt.is_zero() {
            return;
        }
        // Sent this far ahead of the block it should be in.
        let lead = (bt / 5).clamp(Duration::from_millis(50), Duration::from_secs(1));
        // Never held longer than an interval and a half (a chain that stalls, a lost receipt).
        let give_up = tokio::time::Instant::now() + bt + bt / 2;
        while jobs.len() < max {
            if jobs.iter().any(|j| j.sent.is_some()) {
                // A request is waiting for this send to be answered (`answer = "submitted"`):
                // holding it for the next block would cost it up to an interval. Sent now, with
                // whatever has gathered.
                return;
            }
            // Listening before looking: a receipt that comes back in between is not missed.
            let mined = self.mined.notified();
            tokio::pin!(mined);
            mined.as_mut().enable();
            let (in_flight, last, instant) = {
                let r = self.rhythm.lock().expect("rhythm lock");
                (r.in_flight, r.last_block, r.instant)
            };
            if instant {
                return;
            }
            let until = if in_flight > 0 {
                // The block that mines the last batch is next; this one goes in the one after.
                give_up
            } else {
                let Some(last) = last else { return };
                let now = std::time::Instant::now();
                let mut next = last + bt;
                while next <= now {
                    next += bt;
                }
                if next.saturating_duration_since(now) <= lead || now.duration_since(last) > bt * 4 {
                    // Due now; or no block seen lately (idle): send at once.
                    return;
                }
                tokio::time::Instant::from_std(next - lead).min(give_up)
            };
            if tokio::time::Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = &mut mined, if in_flight > 0 => {}
                _ = self.wake.notified() => {}
            }
            jobs.extend(self.take(max - jobs.len()));
            if tokio::time::Instant::now() >= until && in_flight == 0 {
                return;
            }
        }
    }

    /// The key for the next transaction: the fewest in flight; on a tie, the next in turn.
    fn pick(&self) -> usize {
        use std::sync::atomic::Ordering;
        let n = self.relayers.len();
        if n == 1 {
            return 0;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.relayers[i].1.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// The keys to try for the next transaction, in order: [`Self::pick`]'s, then the others by
    /// fewest in flight; keys refused for want of gas in the last [`EMPTY_FOR`] come last.
    fn candidates(&self) -> Vec<usize> {
        use std::sync::atomic::Ordering;
        let first = self.pick();
        let mut order: Vec<usize> = std::iter::once(first)
            .chain((0..self.relayers.len()).filter(|&i| i != first))
            .collect();
        order[1..].sort_by_key(|&i| self.relayers[i].1.load(Ordering::Acquire));
        // A stable sort: the order above holds among the keys with gas, and among those without.
        order.sort_by_key(|&i| {
            self.empty[i]
                .lock()
                .expect("empty lock")
                .is_some_and(|at| at.elapsed() < EMPTY_FOR)
        });
        order
    }

    fn take(&self, n: usize) -> Vec<Job> {
        let mut q = self.queue.lock().expect("batch lock");
        let n = q.len().min(n);
        q.drain(..n).collect()
    }

    async fn multicall_deployed(&self) -> bool {
        let found = self
            .multicall
            .get_or_try_init(|| async {
                let code = self.provider.get_code_at(MULTICALL3).await?;
                if code.is_empty() {
                    tracing::info!("no Multicall3 on this chain: one transaction per payment");
                }
                Ok::<bool, alloy::transports::TransportError>(!code.is_empty())
            })
            .await;
        found.copied().unwrap_or(false)
    }

    /// Simulates the batch from the relayer (one `eth_call`): payments whose transfer would revert
    /// are answered with the contract's reason and left out; the others are returned to be sent.
    async fn simulate(&self, jobs: Vec<Job>) -> Vec<Job> {
        let from = self.relayers[0].0.address();
        let call = |to: Address, input: Bytes| TransactionRequest::default().from(from).to(to).input(input.into());
        if jobs.len() == 1 {
            let req = call(self.opts.asset, jobs[0].calldata.clone());
            // The pending block: a transfer the payer already has in the mempool is seen.
            return match self.provider.call(req).pending().await {
                Ok(_) => jobs,
                Err(e) => {
                    let err = match super::revert_text(&e) {
                        Some(text) => SendError::WouldRevert(text),
                        None => SendError::Unreachable(e.to_string()),
                    };
                    for j in jobs {
                        let _ = j.reply.send(Err(err.clone()));
                    }
                    Vec::new()
                }
            };
        }
        let input: Bytes = aggregate(self.opts.asset, &jobs).into();
        let out = match self.provider.call(call(MULTICALL3, input)).pending().await {
            Ok(out) => out,
            Err(e) => {
                let err = SendError::Unreachable(e.to_string());
                for j in jobs {
                    let _ = j.reply.send(Err(err.clone()));
                }
                return Vec::new();
            }
        };
        let Ok(results) = IMulticall3::aggregate3Call::abi_decode_returns(&out) else {
            // Unreadable: send them all and let each receipt judge its own transfer.
            return jobs;
        };
        let mut kept = Vec::with_capacity(jobs.len());
        for (j, r) in jobs
            .into_iter()
            .zip(results.into_iter().map(Some).chain(std::iter::repeat(None)))
        {
            match r {
                Some(r) if !r.success => {
                    let text = alloy::sol_types::Revert::abi_decode(&r.returnData)
                        .map(|r| r.reason)
                        .unwrap_or_else(|_| "reverted without a reason".into());
                    let _ = j.reply.send(Err(SendError::WouldRevert(text)));
                }
                _ => kept.push(j),
            }
        }
        kept
    }

    async fn send(self: Arc<Self>, jobs: Vec<Job>) {
        let jobs = self.simulate(jobs).await;
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        let (to, input, gas) = if n == 1 {
            (self.opts.asset, jobs[0].calldata.clone(), self.opts.gas_per_transfer)
        } else {
            let input = aggregate(self.opts.asset, &jobs);
            (
                MULTICALL3,
                input.into(),
                self.opts.gas_per_transfer * n as u64 + BATCH_OVERHEAD_GAS,
            )
        };
        // A key without gas is refused by the node before anything is sent: the next key takes
        // the transaction, and the network pauses only when every key is out of gas.
        let order = self.candidates();
        let mut tried = 0;
        let (which, relayer, result) = loop {
            let which = order[tried];
            tried += 1;
            let relayer = self.relayers[which].0.clone();
            let result = relayer
                .send(&self.provider, to, input.clone(), gas, &self.receipts)
                .await;
            let out_of_gas = matches!(result, Err(SendError::OutOfGas { .. }));
            *self.empty[which].lock().expect("empty lock") = out_of_gas.then(std::time::Instant::now);
            if out_of_gas && tried < order.len() {
                tracing::warn!(
                    network = %self.opts.network,
                    relayer = %relayer.address(),
                    "relayer is out of gas: fund it with the chain's native token; its transactions go out from the other keys until then"
                );
                continue;
            }
            break (which, relayer, result);
        };
        match result {
            Ok((tx, awaited)) => {
                self.relayers[which].1.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let sent = std::time::Instant::now();
                let mut jobs = jobs;
                for j in &mut jobs {
                    if let Some(s) = j.sent.take() {
                        let _ = s.send(tx.to_string());
                    }
                }
                self.rhythm.lock().expect("rhythm lock").in_flight += 1;
                tokio::spawn(async move {
                    let receipt = self
                        .receipts
                        .wait(tx, awaited, self.opts.receipt_timeout, self.opts.confirmations)
                        .await;
                    self.relayers[which].1.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    {
                        let mut r = self.rhythm.lock().expect("rhythm lock");
                        r.in_flight = r.in_flight.saturating_sub(1);
                        if receipt.is_some() {
                            let now = std::time::Instant::now();
                            r.last_block = Some(now);
                            r.instant =
                                !self.opts.block_time.is_zero() && now.duration_since(sent) < self.opts.block_time / 4;
                        }
                    }
                    self.mined.notify_waiters();
                    match &receipt {
                        // One line per transaction, per network: payments per transaction and gas
                        // per payment (also the tollgate_settlement_batch_size and
                        // tollgate_gas_per_payment histograms).
                        Some(r) => tracing::info!(
                            network = %self.opts.network,
                            relayer = %relayer.address(),
                            %tx,
                            block = r.block_number.unwrap_or_default(),
                            payments = n,
                            gas_per_payment = r.gas_used / n as u64,
                            "settlement transaction mined"
                        ),
                        None => tracing::warn!(
                            network = %self.opts.network,
                            %tx,
                            payments = n,
                            "settlement transaction not mined within the receipt timeout; its payments are pending"
                        ),
                    }
                    for j in jobs {
                        let _ = j.reply.send(Ok(Landed {
                            tx,
                            receipt: receipt.clone(),
                            batch_size: n,
                            relayer: relayer.clone(),
                        }));
                    }
                });
            }
            Err(e) => {
                for j in jobs {
                    let _ = j.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
