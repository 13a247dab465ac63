//! Receipt watching: one loop per chain finds every awaited transaction, however many are in flight.
//!
//! Polling `eth_getTransactionReceipt` per transaction makes the poll interval the latency floor and
//! multiplies RPC load by the concurrency (the reference stack's p99 was its 1 s receipt poll). Here a
//! transaction is registered before it is sent; while anything is awaited, one loop asks for the head
//! block every `poll` and reads each new block's receipts with one `eth_getBlockReceipts`. A node that
//! lacks that method gets per-transaction lookups instead. A send wakes the loop at once
//! ([`ReceiptWatcher::sent`]), so a chain that mines on arrival is not held to the poll interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::primitives::B256;
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionReceipt;
use alloy::transports::RpcError;
use tokio::sync::{oneshot, Notify};

/// How many blocks back a scan starts when the loop wakes from idle (transactions are registered
/// before they are sent, so only blocks made since then can hold them).
const RESUME_BACK: u64 = 8;
/// Quick looks after each send, before the loop settles back to its poll interval.
const QUICK_LOOKS: u32 = 2;
/// The most blocks scanned in one pass; older ones are left to the per-transaction fallback.
const MAX_SCAN: u64 = 64;

#[derive(Default)]
struct Waiting {
    by_hash: HashMap<B256, oneshot::Sender<TransactionReceipt>>,
}

/// Finds receipts for registered transactions.
pub struct ReceiptWatcher {
    provider: RootProvider,
    poll: Duration,
    waiting: Mutex<Waiting>,
    wake: Notify,
    started: std::sync::Once,
}

impl ReceiptWatcher {
    pub fn new(provider: RootProvider, poll: Duration) -> Arc<Self> {
        Arc::new(ReceiptWatcher {
            provider,
            poll,
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            started: std::sync::Once::new(),
        })
    }

    /// Registers a transaction before it is sent; the receiver gets its receipt once it is in a block.
    pub fn expect(self: &Arc<Self>, hash: B256) -> oneshot::Receiver<TransactionReceipt> {
        self.started.call_once(|| {
            tokio::spawn(self.clone().run());
        });
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("receipt lock").by_hash.insert(hash, tx);
        self.wake.notify_one();
        rx
    }

    /// Says a registered transaction reached the node: the loop looks at the head now instead of at
    /// the end of its poll interval (bursts of sends share one look). On a chain that mines on
    /// arrival this makes the poll interval irrelevant; on others it costs one call per burst.
    pub fn sent(&self) {
        self.wake.notify_one();
    }

    /// Waits (bounded by `timeout`) for the receipt `rx` was registered for, asking the node directly
    /// now and then in case the loop missed it; then for `confirmations` blocks. `None`: not in time.
    pub async fn wait(
        &self,
        hash: B256,
        mut rx: oneshot::Receiver<TransactionReceipt>,
        timeout: Duration,
        confirmations: u64,
    ) -> Option<TransactionReceipt> {
        let deadline = tokio::time::Instant::now() + timeout;
        let fallback_every = (self.poll * 10).max(Duration::from_secs(1));
        let mut loop_alive = true;
        let receipt = loop {
            let slice = fallback_every.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if loop_alive {
                match tokio::time::timeout(slice, &mut rx).await {
                    Ok(Ok(r)) => break Some(r),
                    Ok(Err(_)) => loop_alive = false,
                    Err(_) => {}
                }
            } else {
                tokio::time::sleep(self.poll).await;
            }
            if let Ok(Some(r)) = self.provider.get_transaction_receipt(hash).await {
                break Some(r);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
        };
        self.forget(&hash);
        let r = receipt?;
        if confirmations > 1 {
            let want = r.block_number.unwrap_or(u64::MAX).saturating_add(confirmations - 1);
            while !self.provider.get_block_number().await.is_ok_and(|b| b >= want) {
                if tokio::time::Instant::now() + self.poll > deadline {
                    return None;
                }
                tokio::time::sleep(self.poll).await;
            }
            // Deep enough: still in the block it was first seen in? (A reorg may have moved or
            // dropped it; then it is not confirmed yet, and reconciliation looks again later.)
            match self.provider.get_transaction_receipt(hash).await {
                Ok(Some(again)) if again.block_hash == r.block_hash => {}
                _ => return None,
            }
        }
        Some(r)
    }

    /// Stops waiting for a transaction (it was not sent, or its wait timed out).
    pub fn forget(&self, hash: &B256) {
        self.waiting.lock().expect("receipt lock").by_hash.remove(hash);
    }

    fn is_idle(&self) -> bool {
        self.waiting.lock().expect("receipt lock").by_hash.is_empty()
    }

    fn deliver(&self, receipts: Vec<TransactionReceipt>) {
        let mut w = self.waiting.lock().expect("receipt lock");
        for r in receipts {
            if let Some(tx) = w.by_hash.remove(&r.transaction_hash) {
                let _ = tx.send(r);
            }
        }
    }

    async fn run(self: Arc<Self>) {
        let mut next: Option<u64> = None;
        let mut block_receipts = true;
        let mut quick = 0u32;
        // Woken from idle since the last scan.
        let mut resumed = false;
        loop {
            if self.is_idle() {
                self.wake.notified().await;
                resumed = true;
                continue;
            }
            if let Ok(head) = self.provider.get_block_number().await {
                // Blocks already scanned are not scanned again after an idle spell: a transaction
                // registered since was sent since, and cannot be in them (scanning the last
                // RESUME_BACK blocks at every wake was most of this loop's work under light load).
                let back = head.saturating_sub(RESUME_BACK);
                let mut from = match next {
                    // A chain that went back (a reset node): start again near its head.
                    Some(n) if n > head + 1 => back,
                    Some(n) if resumed => n.max(back),
                    Some(n) => n,
                    None => back,
                };
                if head >= from && head - from > MAX_SCAN {
                    from = head - MAX_SCAN;
                }
                let mut scanned = from;
                while scanned <= head && block_receipts {
                    match self.provider.get_block_receipts(BlockId::number(scanned)).await {
                        Ok(Some(rs)) => self.deliver(rs),
                        Ok(None) => break,
                        Err(RpcError::ErrorResp(e)) if e.code == -32601 || e.message.contains("not supported") => {
                            tracing::info!(error = %e.message, "node has no eth_getBlockReceipts; looking receipts up one by one");
                            block_receipts = false;
                        }
                        Err(_) => break,
                    }
                    scanned += 1;
                }
                next = Some(scanned);
                resumed = false;
                if !block_receipts {
                    self.poll_each().await;
                }
            }
            // After a send, look again soon (5, then 10 ms) before falling back to the poll
            // interval: a node that mines on arrival may not have mined yet at the first look.
            let pause = if quick < QUICK_LOOKS {
                Duration::from_millis(5 << quick).min(self.poll)
            } else {
                self.poll
            };
            quick += 1;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.wake.notified() => quick = 0,
            }
        }
    }

    /// The fallback: one receipt lookup per awaited transaction.
    async fn poll_each(&self) {
        let hashes: Vec<B256> = self
            .waiting
            .lock()
            .expect("receipt lock")
            .by_hash
            .keys()
            .copied()
            .collect();
        for h in hashes {
            if let Ok(Some(r)) = self.provider.get_transaction_receipt(h).await {
                self.deliver(vec![r]);
            }
        }
    }
}
