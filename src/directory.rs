//! Which tenant a request is for: the one a drop-in config describes, or (hosted mode) one of many
//! from the database, named by the Host header (`{slug}.{base_domain}`) or a `/t/{slug}/` path
//! prefix.
//!
//! The proxy and the front ask the same question the same way. Hosted tenants are built from their
//! rows and cached for `hosted.tenant_cache_secs`: a change made through any gateway's API reaches
//! every gateway within that bound (and the gateway that made it at once), without a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{HostedConfig, Settings};
use crate::store::Store;
use crate::tenant::Tenant;

/// Where tenants come from.
pub enum Directory {
    /// The drop-in gateway: every request is for this tenant.
    One(Arc<Tenant>),
    Hosted(Hosted),
}

/// The tenant a request is for.
#[derive(Clone)]
pub struct Found {
    pub tenant: Arc<Tenant>,
    /// Bytes at the start of the target that name the tenant (`/t/acme`), not forwarded.
    pub prefix: usize,
}

/// What the directory knows of a slug.
#[derive(Clone)]
pub enum Entry {
    Ready(Arc<Tenant>),
    /// Stored, but cannot serve (no upstream yet, a refused upstream): said as a 503.
    NotReady(String),
    /// No tenant by that name.
    Missing,
}

/// The answer to "which tenant is this request for".
pub enum Lookup {
    Found(Found),
    NotReady(String),
    Unknown,
}

/// Hosted mode's directory: tenants from the database, cached by slug.
pub struct Hosted {
    store: Store,
    settings: Arc<Settings>,
    cfg: HostedConfig,
    cache: moka::sync::Cache<String, Entry>,
}

impl Hosted {
    pub fn new(store: Store, settings: Arc<Settings>) -> Hosted {
        let cfg = settings.hosted.clone().expect("hosted settings");
        let cache = moka::sync::Cache::builder()
            // Tenants that get traffic stay built; a scan over many unknown names cannot evict
            // them all at once (TinyLFU admission), and memory stays bounded.
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(cfg.tenant_cache_secs.max(1)))
            .build();
        Hosted {
            store,
            settings,
            cfg,
            cache,
        }
    }

    /// The slug a request names, and the prefix that named it.
    fn slug<'a>(&self, host: Option<&'a [u8]>, target: &'a [u8]) -> Option<(&'a str, usize)> {
        if let (Some(base), Some(host)) = (&self.cfg.base_domain, host) {
            let host = std::str::from_utf8(host).ok()?;
            let name = host.rsplit_once(':').map_or(host, |(h, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    host
                }
            });
            if let Some(sub) = name
                .len()
                .checked_sub(base.len() + 1)
                .filter(|&n| name.as_bytes()[n] == b'.' && name[n + 1..].eq_ignore_ascii_case(base))
                .map(|n| &name[..n])
            {
                if valid_slug(sub) {
                    return Some((sub, 0));
                }
            }
        }
        if self.cfg.path_prefix {
            let rest = target.strip_prefix(b"/t/")?;
            let end = rest.iter().position(|&b| b == b'/')?;
            let slug = std::str::from_utf8(&rest[..end]).ok()?;
            if valid_slug(slug) {
                return Some((slug, 3 + end));
            }
        }
        None
    }

    fn cached(&self, host: Option<&[u8]>, target: &[u8]) -> Option<Lookup> {
        let (slug, prefix) = self.slug(host, target)?;
        // (A miss here is counted where the tenant is then loaded.)
        let e = self.cache.get(slug)?;
        if crate::metrics::METRICS.enabled() {
            crate::metrics::METRICS.tenant_cache_hit.inc();
        }
        Some(to_lookup(e, prefix))
    }

    async fn find(&self, host: Option<&[u8]>, target: &[u8]) -> Lookup {
        let Some((slug, prefix)) = self.slug(host, target) else {
            return Lookup::Unknown;
        };
        let m = &crate::metrics::METRICS;
        if let Some(e) = self.cache.get(slug) {
            if m.enabled() {
                m.tenant_cache_hit.inc();
            }
            return to_lookup(e, prefix);
        }
        if m.enabled() {
            m.tenant_cache_miss.inc();
        }
        let entry = self.load(slug).await;
        to_lookup(entry, prefix)
    }

    /// Reads and builds a tenant, and caches the result (a database failure is not cached).
    pub async fn load(&self, slug: &str) -> Entry {
        let entry = match self.store.tenant_by_slug(slug).await {
            Ok(None) => Entry::Missing,
            Ok(Some(row)) => match crate::tenancy::build::tenant(&row, &self.settings).await {
                Ok(t) => Entry::Ready(Arc::new(t)),
                Err(e) => {
                    tracing::warn!(tenant = %slug, error = %e, "tenant cannot serve");
                    Entry::NotReady(e.to_string())
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "tenant directory: database unavailable");
                return Entry::NotReady("the gateway's database is unavailable".into());
            }
        };
        self.cache.insert(slug.to_string(), entry.clone());
        entry
    }

    /// Forgets a tenant, so that this gateway rebuilds it on its next request (after a change).
    pub fn forget(&self, slug: &str) {
        self.cache.invalidate(slug);
    }
}

fn to_lookup(e: Entry, prefix: usize) -> Lookup {
    match e {
        Entry::Ready(tenant) => Lookup::Found(Found { tenant, prefix }),
        Entry::NotReady(why) => Lookup::NotReady(why),
        Entry::Missing => Lookup::Unknown,
    }
}

/// A tenant slug: 1 to 63 lower-case letters, digits and inner hyphens (a DNS label).
pub fn valid_slug(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Directory {
    /// The tenant for a request with this Host header and target, when it is known without a
    /// database query (the front answers only such requests; the rest go to the proxy).
    pub fn cached(&self, host: Option<&[u8]>, target: &[u8]) -> Option<Found> {
        match self {
            Directory::One(t) => Some(Found {
                tenant: t.clone(),
                prefix: 0,
            }),
            Directory::Hosted(h) => match h.cached(host, target)? {
                Lookup::Found(f) => Some(f),
                _ => None,
            },
        }
    }

    /// The tenant for a request, asking the database when it is not cached.
    pub async fn find(&self, host: Option<&[u8]>, target: &[u8]) -> Lookup {
        match self {
            Directory::One(_) => match self.cached(host, target) {
                Some(f) => Lookup::Found(f),
                None => Lookup::Unknown,
            },
            Directory::Hosted(h) => h.find(host, target).await,
        }
    }

    /// The drop-in tenant, when there is exactly one.
    pub fn single(&self) -> Option<&Arc<Tenant>> {
        match self {
            Directory::One(t) => Some(t),
            Directory::Hosted(_) => None,
        }
    }

    pub fn hosted(&self) -> Option<&Hosted> {
        match self {
            Directory::Hosted(h) => Some(h),
            Directory::One(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slugs_are_dns_labels() {
        for s in ["acme", "a", "acme-2", "0x"] {
            assert!(valid_slug(s), "{s}");
        }
        for s in ["", "Acme", "-a", "a-", "a.b", "a_b", "%61", &"a".repeat(64)] {
            assert!(!valid_slug(s), "{s}");
        }
    }
}
