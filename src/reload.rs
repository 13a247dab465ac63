//! Reloading the configuration without a restart (SIGHUP, or `tollgate reload`).
//!
//! The file is read and validated whole; an invalid one is refused with its errors and the running
//! configuration stays. A valid one becomes a new [`App`] snapshot that requests starting after
//! the swap use ([`crate::app::Live`]); requests in flight finish on the one they started with, and
//! no connection is touched. What a reload changes: routes, prices, payees, the upstream, how
//! requests are read, CORS, the public URL, networks (one configured exactly as before keeps its
//! chain client, with its relayer's nonces and the batch being formed), plans and rate limits
//! (unchanged limits keep their buckets). What only a restart changes, because sockets, pools or
//! keys hold it: `listen`, `database`, `threads`, `api.listen`, `metrics.listen`, `[limits]`,
//! `[settlement]`, `rate_limits.redis_url` / `redis_prefix`, and drop-in vs hosted mode. Those keep
//! their running values, and the log says so.

use std::path::Path;
use std::sync::Arc;

use crate::app::App;
use crate::config::{self, Settings};
use crate::directory::{Directory, Hosted};

/// A reload that took: the new snapshot, and what in the file waits for a restart.
pub struct Reloaded {
    pub app: Arc<App>,
    pub at_restart: Vec<&'static str>,
}

/// Reads `path` and builds the configuration that replaces `current`.
pub fn next(current: &App, path: &Path) -> Result<Reloaded, String> {
    let (mut settings, tenant) = config::load_any(path).map_err(|e| e.to_string())?;
    let old = &current.settings;
    if tenant.is_some() != current.directory.single().is_some() {
        return Err(format!(
            "{}: switches between the drop-in gateway and hosted mode; that takes a restart",
            path.display()
        ));
    }
    let at_restart = keep_restart_only(&mut settings, old);
    // Unchanged limits keep their buckets.
    if settings.rate_limits.is_some() && settings.rate_limits == old.rate_limits {
        settings.rate_limits = old.rate_limits.clone();
    }
    settings.plans.keep_buckets_of(&old.plans);
    let payments = if settings.networks == old.networks {
        current.payments.exposure.set_limits(settings.exposure);
        current.payments.clone()
    } else {
        Arc::new(current.payments.reloaded(&settings, &old.networks)?)
    };
    let directory = match tenant {
        Some(mut t) => {
            t.limits = settings.rate_limits.clone();
            Directory::One(Arc::new(t))
        }
        None => Directory::Hosted(Hosted::new(payments.store.clone(), Arc::new(settings.clone()))),
    };
    Ok(Reloaded {
        app: Arc::new(App {
            // Read again: a renewed certificate is picked up.
            tls: App::tls_of(&settings)?,
            settings,
            payments,
            directory,
        }),
        at_restart,
    })
}

/// Puts back the running values of what only a restart changes; names those the file changed.
fn keep_restart_only(new: &mut Settings, old: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($field:ident, $name:literal) => {
            if new.$field != old.$field {
                changed.push($name);
                new.$field = old.$field.clone();
            }
        };
    }
    keep!(listen, "listen");
    keep!(database, "database");
    keep!(threads, "threads");
    keep!(pid_file, "pid_file");
    keep!(upgrade_sock, "upgrade_sock");
    keep!(api_listen, "api.listen");
    keep!(metrics_listen, "metrics.listen");
    keep!(limits, "limits");
    keep!(settlement, "settlement");
    keep!(redis_url, "rate_limits.redis_url");
    keep!(redis_prefix, "rate_limits.redis_prefix");
    changed
}
