//! Batched settlement: concurrent payments on one chain share a transaction.
//!
//! Settlements queue here; one loop per chain sends what has queued as a single transaction — a
//! plain `transferWithAuthorization` when there is one, a Multicall3 `aggregate3` of them (each
//! allowed to fail on its own) when there are several — and the next batch forms while that one is
//! sent. Nothing waits for a batch to fill: an idle gateway sends each payment at once, a busy one
//! sends fewer, fuller transactions (less gas per payment, fewer blocks for the node to build).
//! Each payment is then judged by its own `AuthorizationUsed` and `Transfer` logs in the receipt.
//! Chains without Multicall3 at its canonical address get one transaction per payment, sent in parallel.

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
}

struct Job {
    calldata: Bytes,
    reply: oneshot::Sender<Result<Landed, SendError>>,
}

/// What the batcher needs to send and to wait.
pub struct BatchOptions {
    pub asset: Address,
    pub gas_per_transfer: u64,
    pub max_batch: usize,
    /// How long a batch may wait for payments still being checked on chain; with none on their
    /// way it is sent at once.
    pub window: Duration,
    pub receipt_timeout: Duration,
    pub confirmations: u64,
}

struct Inner {
    provider: RootProvider,
    relayer: Arc<Relayer>,
    receipts: Arc<ReceiptWatcher>,
    opts: BatchOptions,
    queue: Mutex<VecDeque<Job>>,
    wake: Notify,
    /// Payments being checked on chain now, whose settlement will most likely follow at once.
    coming: std::sync::atomic::AtomicUsize,
    multicall: OnceCell<bool>,
}

/// One chain's settlement queue.
pub struct Batcher {
    inner: Arc<Inner>,
    started: std::sync::Once,
}

impl Batcher {
    pub fn new(
        provider: RootProvider,
        relayer: Arc<Relayer>,
        receipts: Arc<ReceiptWatcher>,
        opts: BatchOptions,
    ) -> Self {
        Batcher {
            inner: Arc::new(Inner {
                provider,
                relayer,
                receipts,
                opts,
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                coming: Default::default(),
                multicall: OnceCell::new(),
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

    /// Sends one `transferWithAuthorization` (alone or with others) and waits for its receipt.
    pub async fn settle(&self, calldata: Bytes) -> Result<Landed, SendError> {
        self.started.call_once(|| {
            tokio::spawn(self.inner.clone().run());
        });
        let (reply, rx) = oneshot::channel();
        self.inner
            .queue
            .lock()
            .expect("batch lock")
            .push_back(Job { calldata, reply });
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
                // Serialised on purpose: while this batch is sent, the next one gathers.
                self.clone().send(jobs).await;
            } else {
                for job in jobs {
                    tokio::spawn(self.clone().send(vec![job]));
                }
            }
        }
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
        let from = self.relayer.address();
        let call = |to: Address, input: Bytes| TransactionRequest::default().from(from).to(to).input(input.into());
        if jobs.len() == 1 {
            let req = call(self.opts.asset, jobs[0].calldata.clone());
            return match self.provider.call(req).await {
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
        let out = match self.provider.call(call(MULTICALL3, input)).await {
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
        match self.relayer.send(&self.provider, to, input, gas, &self.receipts).await {
            Ok((tx, awaited)) => {
                tokio::spawn(async move {
                    let receipt = self
                        .receipts
                        .wait(tx, awaited, self.opts.receipt_timeout, self.opts.confirmations)
                        .await;
                    for j in jobs {
                        let _ = j.reply.send(Ok(Landed {
                            tx,
                            receipt: receipt.clone(),
                            batch_size: n,
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
