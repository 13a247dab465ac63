//! The tenant the request fuzz targets price against: exact, prefix, parameter and method routes.

use std::sync::OnceLock;

use tollgate::config::{build, FileConfig, Settings};
use tollgate::tenant::Tenant;

pub const CONFIG: &str = r#"
upstream = "http://127.0.0.1:8080"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
[networks.base]
rpc_url = "http://127.0.0.1:8545"
[[routes]]
method = "GET"
path = "/api/premium/*"
price = "$0.01"
[[routes]]
method = "DELETE"
path = "/api/items/{id}"
price = "$0.02"
[[routes]]
path = "/api/weather/{city}/today"
price = "$0.001"
[[routes]]
path = "/health"
price = "free"
"#;

/// The tenant built with `request` appended as its `[request]` table.
pub fn tenant(request: &str) -> (Settings, Tenant) {
    let file: FileConfig = toml::from_str(&format!("{CONFIG}\n[request]\n{request}")).expect("fuzz config");
    build(file).expect("fuzz config builds")
}

#[allow(dead_code)] // not every target uses it
pub fn default_tenant() -> &'static (Settings, Tenant) {
    static T: OnceLock<(Settings, Tenant)> = OnceLock::new();
    T.get_or_init(|| tenant(""))
}
