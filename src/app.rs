//! What every worker shares: process settings, the payment pipeline, and the tenant directory —
//! one consistent snapshot ([`App`]) that a reload replaces as a whole ([`Live`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::directory::Directory;
use crate::payment::Payments;

/// The gateway's shared parts: one configuration's snapshot.
pub struct App {
    pub settings: Settings,
    pub payments: Arc<Payments>,
    pub directory: Directory,
    /// `[tls]`: the proxy listener's TLS acceptor (built from the files at start and each reload).
    pub tls: Option<Arc<pingora_core::listeners::tls::Acceptor>>,
}

impl App {
    /// The TLS acceptor `settings` asks for, read from its files.
    pub fn tls_of(settings: &Settings) -> Result<Option<Arc<pingora_core::listeners::tls::Acceptor>>, String> {
        settings
            .tls
            .as_ref()
            .map(|t| crate::conn::acceptor(&t.cert_file, &t.key_file))
            .transpose()
    }
}

/// The configuration in force. A request reads one snapshot from start to end (the proxy keeps it
/// in the request's context); a reload ([`crate::reload`]) stores a new one for the requests that
/// start after it, without touching a connection.
pub struct Live {
    current: ArcSwap<App>,
    /// How many configurations have been loaded (1 at start).
    generation: std::sync::atomic::AtomicU64,
}

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Live> {
        Arc::new(Live {
            current: ArcSwap::new(app),
            generation: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// The snapshot in force, for a short look (no reference count taken).
    pub fn load(&self) -> arc_swap::Guard<Arc<App>> {
        self.current.load()
    }

    /// The snapshot in force, to keep.
    pub fn app(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// Puts `app` in force; returns the new generation.
    pub fn store(&self, app: Arc<App>) -> u64 {
        self.current.store(app);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}
