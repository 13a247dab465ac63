//! Money answered but not yet settled.
//!
//! A route with `answer = "verified"` or `"submitted"` serves the request before its transfer is in
//! a block. Until then the payer could move its funds and the transfer would fail: the gateway
//! would have served it for nothing. This bounds that risk: each such payment is held here, by payer
//! and in total, from the moment it is answered until it is on chain; a payment that would take a
//! payer (or the whole gateway) past its bound is answered the safe way instead, after its receipt.
//! A payer whose answered payment then failed on chain owes it: its payments are refused until that
//! one settles (the reconciler retries it while its authorization is valid) or expires (a recorded
//! loss).
//!
//! Amounts are kept in millionths of a US dollar (USDC's own unit on every supported chain). Each
//! gateway process holds what it answered at once, and at each reconciliation what the shared ledger
//! shows served and unsettled by others (or before a restart); the owing payers come from the
//! ledger's `failed` rows the same way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::chains::ReplayKey;

/// `settlement.max_unsettled_per_payer` and `max_unsettled_total`, in millionths of a dollar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_payer: u64,
    pub total: u64,
}

/// Which bound a payment would cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Payer,
    Total,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Payer => "payer",
            Over::Total => "total",
        }
    }
}

struct Held {
    payer: String,
    network: String,
    micro_usd: u64,
    /// Found in the ledger ([`Exposure::sync_found`]) rather than answered by this process: dropped
    /// when the ledger no longer shows it unsettled (another gateway's reconciler settled it).
    found: bool,
}

struct State {
    limits: Limits,
    total: u64,
    by_payer: HashMap<String, u64>,
    by_network: HashMap<String, u64>,
    held: HashMap<ReplayKey, Held>,
    /// Payers with an answered payment that failed on chain, and those payments.
    owing: HashMap<String, HashSet<ReplayKey>>,
    /// Failed here since the last [`Exposure::sync_owing`] began (kept by it).
    failed_lately: HashSet<ReplayKey>,
}

/// One process's unsettled exposure (kept across configuration reloads).
pub struct Exposure {
    state: Mutex<State>,
    /// How many payers owe: the per-request check is one atomic load while nobody does.
    owing_payers: AtomicUsize,
}

impl Exposure {
    pub fn new(limits: Limits) -> Exposure {
        Exposure {
            state: Mutex::new(State {
                limits,
                total: 0,
                by_payer: HashMap::new(),
                by_network: HashMap::new(),
                held: HashMap::new(),
                owing: HashMap::new(),
                failed_lately: HashSet::new(),
            }),
            owing_payers: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("exposure lock")
    }

    /// New bounds (a reload); what is held stays held.
    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    /// Holds a payment about to be answered before its settlement, if neither its payer nor the
    /// gateway would pass its bound. Atomic: concurrent requests never pass a bound together.
    pub fn hold(&self, key: &ReplayKey, network: &str, micro_usd: u64) -> Result<(), Over> {
        let mut s = self.lock();
        if s.held.contains_key(key) {
            return Ok(());
        }
        let payer_now = s.by_payer.get(&key.payer).copied().unwrap_or(0);
        if payer_now.saturating_add(micro_usd) > s.limits.per_payer {
            return Err(Over::Payer);
        }
        if s.total.saturating_add(micro_usd) > s.limits.total {
            return Err(Over::Total);
        }
        s.add(key, network, micro_usd, false);
        Ok(())
    }

    /// Holds a payment the ledger shows answered and unsettled (another process's, or one from
    /// before a restart), whatever the bounds: it is exposure already.
    pub fn hold_found(&self, key: &ReplayKey, network: &str, micro_usd: u64) {
        let mut s = self.lock();
        if !s.held.contains_key(key) {
            s.add(key, network, micro_usd, true);
        }
    }

    /// Makes the holds found in the ledger exactly `found` (key, network, amount): new ones are
    /// held, and found ones the ledger no longer shows unsettled are dropped. What this process
    /// answered itself is left alone (it releases those as they settle).
    pub fn sync_found(&self, found: Vec<(ReplayKey, String, u64)>) {
        let mut s = self.lock();
        let keep: HashSet<&ReplayKey> = found.iter().map(|(k, _, _)| k).collect();
        let gone: Vec<ReplayKey> = s
            .held
            .iter()
            .filter(|(k, h)| h.found && !keep.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            s.remove(k);
        }
        for (k, network, micro_usd) in &found {
            if !s.held.contains_key(k) {
                s.add(k, network, *micro_usd, true);
            }
        }
    }

    /// The payment is on chain, or was never answered early after all: no longer exposure.
    pub fn release(&self, key: &ReplayKey) {
        self.lock().remove(key);
    }

    /// The answered payment's transfer failed on chain: it stays held, and its payer owes it.
    pub fn fail(&self, key: &ReplayKey) {
        let mut s = self.lock();
        s.failed_lately.insert(key.clone());
        s.owing.entry(key.payer.clone()).or_default().insert(key.clone());
        self.owing_payers.store(s.owing.len(), Ordering::Release);
    }

    /// The payment settled after all, or expired (a loss): released, and its payer owes it no more.
    pub fn resolve(&self, key: &ReplayKey) {
        let mut s = self.lock();
        s.remove(key);
        s.failed_lately.remove(key);
        if let Some(keys) = s.owing.get_mut(&key.payer) {
            keys.remove(key);
            if keys.is_empty() {
                s.owing.remove(&key.payer);
            }
        }
        self.owing_payers.store(s.owing.len(), Ordering::Release);
    }

    /// Whether `payer` (as in its replay keys) owes an answered payment that failed.
    pub fn owes(&self, payer: &str) -> bool {
        self.owing_payers.load(Ordering::Acquire) > 0 && self.lock().owing.contains_key(payer)
    }

    /// Replaces the owing payers with the ledger's failed payments (every gateway's), keeping the
    /// ones that failed here since `begin_sync` (written to the ledger after the read).
    pub fn sync_owing(&self, failed: Vec<ReplayKey>) {
        let mut s = self.lock();
        let mut owing: HashMap<String, HashSet<ReplayKey>> = HashMap::new();
        for k in failed.into_iter().chain(s.failed_lately.drain()) {
            owing.entry(k.payer.clone()).or_default().insert(k);
        }
        s.owing = owing;
        self.owing_payers.store(s.owing.len(), Ordering::Release);
    }

    /// Held now per network (millionths of a dollar), and the payers that owe: for the log.
    pub fn summary(&self) -> (Vec<(String, u64)>, usize) {
        let s = self.lock();
        let mut nets: Vec<(String, u64)> = s
            .by_network
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        nets.sort();
        (nets, s.owing.len())
    }

    /// (total, the payer's) held now, in millionths of a dollar.
    #[cfg(test)]
    fn held(&self, payer: &str) -> (u64, u64) {
        let s = self.lock();
        (s.total, s.by_payer.get(payer).copied().unwrap_or(0))
    }
}

impl State {
    fn add(&mut self, key: &ReplayKey, network: &str, micro_usd: u64, found: bool) {
        self.total += micro_usd;
        *self.by_payer.entry(key.payer.clone()).or_default() += micro_usd;
        let n = self.by_network.entry(network.to_string()).or_default();
        *n += micro_usd;
        gauge(network, *n);
        self.held.insert(
            key.clone(),
            Held {
                payer: key.payer.clone(),
                network: network.to_string(),
                micro_usd,
                found,
            },
        );
    }

    fn remove(&mut self, key: &ReplayKey) {
        let Some(h) = self.held.remove(key) else {
            return;
        };
        self.total -= h.micro_usd;
        if let Some(p) = self.by_payer.get_mut(&h.payer) {
            *p -= h.micro_usd;
            if *p == 0 {
                self.by_payer.remove(&h.payer);
            }
        }
        if let Some(n) = self.by_network.get_mut(&h.network) {
            *n -= h.micro_usd;
            gauge(&h.network, *n);
        }
    }
}

fn gauge(network: &str, micro_usd: u64) {
    let m = &crate::metrics::METRICS;
    if m.enabled() {
        m.unsettled_exposure
            .with_label_values(&[network])
            .set(micro_usd as f64 / 1e6);
    }
}

/// An amount in a network's atomic units, in millionths of a dollar (USDC: the same number).
pub fn micro_usd(amount: alloy::primitives::U256, decimals: u8) -> u64 {
    let v = if decimals >= 6 {
        amount / alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(decimals - 6))
    } else {
        amount * alloy::primitives::U256::from(10u64).pow(alloy::primitives::U256::from(6 - decimals))
    };
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(payer: &str, nonce: u32) -> ReplayKey {
        ReplayKey {
            network: "eip155:8453".into(),
            asset: "usdc".into(),
            payer: payer.into(),
            nonce: nonce.to_string(),
        }
    }

    #[test]
    fn bounds_per_payer_and_in_total() {
        let e = Exposure::new(Limits {
            per_payer: 30,
            total: 50,
        });
        assert_eq!(e.hold(&key("a", 1), "base", 20), Ok(()));
        assert_eq!(e.hold(&key("a", 2), "base", 20), Err(Over::Payer));
        assert_eq!(e.hold(&key("a", 2), "base", 10), Ok(()));
        assert_eq!(e.hold(&key("b", 1), "base", 30), Err(Over::Total));
        assert_eq!(e.hold(&key("b", 1), "base", 20), Ok(()));
        assert_eq!(e.held("a"), (50, 30));
        // Holding the same payment twice counts it once.
        assert_eq!(e.hold(&key("b", 1), "base", 20), Ok(()));
        assert_eq!(e.held("b"), (50, 20));
        e.release(&key("a", 1));
        assert_eq!(e.held("a"), (30, 10));
        assert_eq!(e.hold(&key("c", 1), "base", 20), Ok(()));
        e.release(&key("zz", 9));
        assert_eq!(e.held("c"), (50, 20));
    }

    #[test]
    fn a_failure_keeps_the_hold_and_the_payer_owes_until_resolved() {
        let e = Exposure::new(Limits {
            per_payer: 100,
            total: 100,
        });
        assert!(!e.owes("a"));
        e.hold(&key("a", 1), "base", 40).unwrap();
        e.fail(&key("a", 1));
        assert!(e.owes("a"));
        assert!(!e.owes("b"));
        assert_eq!(e.held("a"), (40, 40));
        // Another gateway's reading of the ledger keeps this process's fresh failure.
        e.sync_owing(vec![key("b", 7)]);
        assert!(e.owes("a") && e.owes("b"));
        e.resolve(&key("a", 1));
        assert!(!e.owes("a"));
        assert_eq!(e.held("a"), (0, 0));
        // Next sync: only the ledger's.
        e.sync_owing(vec![]);
        assert!(!e.owes("b"));
    }

    #[test]
    fn holds_found_in_the_ledger_follow_it_and_leave_this_process_own_alone() {
        let e = Exposure::new(Limits {
            per_payer: 100,
            total: 100,
        });
        e.hold(&key("own", 1), "base", 10).unwrap();
        e.sync_found(vec![(key("x", 1), "base".into(), 20), (key("y", 1), "base".into(), 30)]);
        assert_eq!(e.held("x"), (60, 20));
        // Another gateway settled x's: the next reading drops it; this process's own hold stays.
        e.sync_found(vec![(key("y", 1), "base".into(), 30)]);
        assert_eq!(e.held("x"), (40, 0));
        assert_eq!(e.held("own"), (40, 10));
        e.sync_found(vec![]);
        assert_eq!(e.held("own"), (10, 10));
    }

    #[test]
    fn concurrent_holds_never_pass_the_total() {
        let e = std::sync::Arc::new(Exposure::new(Limits {
            per_payer: 1_000,
            total: 1_000,
        }));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let e = e.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|i| e.hold(&key(&format!("p{t}"), *i), "base", 7).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 1_000 / 7);
        assert!(e.held("p0").0 <= 1_000);
    }

    #[test]
    fn amounts_in_micro_dollars() {
        use alloy::primitives::U256;
        assert_eq!(micro_usd(U256::from(10_000u64), 6), 10_000);
        assert_eq!(micro_usd(U256::from(10u64).pow(U256::from(16u64)), 18), 10_000);
        assert_eq!(micro_usd(U256::from(1u64), 2), 10_000);
    }
}
