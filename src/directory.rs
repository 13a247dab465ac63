//! Which tenant a request is for: the one a drop-in config describes, or (hosted mode) one of many
//! from the database, found by Host or by a `/t/{slug}/` path prefix.
//!
//! The proxy and the front ask the same question the same way; the answer carries how much of the
//! target belongs to the directory (a path prefix) rather than to the tenant's upstream.

use std::sync::Arc;

use crate::tenant::Tenant;

/// Where tenants come from.
pub enum Directory {
    /// The drop-in gateway: every request is for this tenant.
    One(Arc<Tenant>),
}

/// The tenant a request is for.
#[derive(Clone)]
pub struct Found {
    pub tenant: Arc<Tenant>,
    /// Bytes at the start of the target that name the tenant (`/t/acme`), not forwarded.
    pub prefix: usize,
}

impl Directory {
    /// The tenant for a request with this Host header and target, when it is known without a
    /// database query (the front answers only such requests; the rest go to the proxy).
    pub fn cached(&self, _host: Option<&[u8]>, _target: &[u8]) -> Option<Found> {
        match self {
            Directory::One(t) => Some(Found {
                tenant: t.clone(),
                prefix: 0,
            }),
        }
    }

    /// The tenant for a request, asking the database when it is not cached. `None`: no tenant
    /// goes by that name.
    pub async fn find(&self, host: Option<&[u8]>, target: &[u8]) -> Option<Found> {
        self.cached(host, target)
    }

    /// The drop-in tenant, when there is exactly one.
    pub fn single(&self) -> Option<&Arc<Tenant>> {
        match self {
            Directory::One(t) => Some(t),
        }
    }
}
