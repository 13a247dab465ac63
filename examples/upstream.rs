//! A small JSON API to put tollgate in front of (the default config points at 127.0.0.1:8080).
//!
//! ```text
//! cargo run --example upstream -- 127.0.0.1:8080
//! ```
//! Every path answers `{"ok":true,"path":…,"payer":…}`; `/…/status/{code}` answers with that status.

#[path = "../tests/e2e/upstream.rs"]
mod upstream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let up = upstream::Upstream::start(&addr).await?;
    eprintln!("upstream listening on {}", up.url());
    tokio::signal::ctrl_c().await?;
    eprintln!("upstream served {} requests", up.count());
    Ok(())
}
