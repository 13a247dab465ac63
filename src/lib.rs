//! tollgate: a reverse-proxy paywall for the x402 payment protocol.
//!
//! A request's path through the code: [`front`] / [`proxy`] (pingora phases) → [`directory`] (which
//! tenant) → [`tenant`] (route) → [`challenge`] (402) or [`payment`] (decode → verify → claim →
//! settle, through one [`payment::settle::Settler`]) → [`chains`] (EVM) → [`store`] (ledger and records).

pub mod api;
pub mod app;
pub mod chains;
pub mod challenge;
pub mod client;
pub mod clock;
pub mod config;
pub mod conn;
pub mod directory;
pub mod discovery;
pub mod facilitator;
pub mod fenced;
pub mod forward;
pub mod front;
pub mod health;
pub mod metrics;
pub mod money;
pub mod payment;
pub mod proxy;
pub mod ratelimit;
pub mod reading;
pub mod redact;
pub mod reload;
pub mod routes;
pub mod serve;
pub mod store;
pub mod tenancy;
pub mod tenant;
pub mod upgrade;
pub mod workers;
pub mod x402;
