//! End-to-end tests: the real tollgate binary on loopback, in front of a real upstream, settling real
//! USDC on a real anvil, with SQLite and PostgreSQL.

mod answer;
mod blocks;
mod common;
mod facilitator;
mod faults;
mod forwarding;
mod front;
mod gateway;
mod hosted;
mod interop;
mod lifecycle;
mod ops;
mod ratelimit;
mod reading;
#[cfg(feature = "solana")]
mod solana;
mod store;
mod tls;
mod trust;
mod upstream;
