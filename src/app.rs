//! What every worker shares: process settings, the payment pipeline, and the tenant directory.

use std::sync::Arc;

use crate::config::Settings;
use crate::directory::Directory;
use crate::payment::Payments;

/// The gateway's shared parts, one per process.
pub struct App {
    pub settings: Settings,
    pub payments: Arc<Payments>,
    pub directory: Directory,
}
