//! The networks tollgate knows by name, with their USDC contract and EIP-712 domain.
//!
//! v1 names networks by short names (`base`), v2 by CAIP-2 ids (`eip155:8453`); a [`Network`] carries
//! both so that either version's payloads can be matched against the same requirement.

use serde::Serialize;

/// The chain family a network belongs to: decides which verifier and settler handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Evm,
    Solana,
}

/// A built-in network: the public facts from the x402 spec's table.
#[derive(Debug, Clone, Copy)]
pub struct KnownNetwork {
    pub name: &'static str,
    pub caip2: &'static str,
    pub family: Family,
    /// EVM chain id (0 for Solana).
    pub chain_id: u64,
    /// USDC contract address (EVM) or mint (Solana).
    pub usdc: &'static str,
    /// EIP-712 domain name and version of the USDC contract (EVM only).
    pub eip712_name: &'static str,
    pub eip712_version: &'static str,
    /// A public RPC endpoint, used when the config names none.
    pub default_rpc: &'static str,
}

/// USDC on every network the x402 spec lists (../shared/x402/PROTOCOL.md).
pub const BUILTIN: &[KnownNetwork] = &[
    KnownNetwork {
        name: "base",
        caip2: "eip155:8453",
        family: Family::Evm,
        chain_id: 8453,
        usdc: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://mainnet.base.org",
    },
    KnownNetwork {
        name: "base-sepolia",
        caip2: "eip155:84532",
        family: Family::Evm,
        chain_id: 84532,
        usdc: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        eip712_name: "USDC",
        eip712_version: "2",
        default_rpc: "https://sepolia.base.org",
    },
    KnownNetwork {
        name: "ethereum",
        caip2: "eip155:1",
        family: Family::Evm,
        chain_id: 1,
        usdc: "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://eth.llamarpc.com",
    },
    KnownNetwork {
        name: "polygon",
        caip2: "eip155:137",
        family: Family::Evm,
        chain_id: 137,
        usdc: "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://polygon-rpc.com",
    },
    KnownNetwork {
        name: "avalanche",
        caip2: "eip155:43114",
        family: Family::Evm,
        chain_id: 43114,
        usdc: "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E",
        eip712_name: "USD Coin",
        eip712_version: "2",
        default_rpc: "https://api.avax.network/ext/bc/C/rpc",
    },
    KnownNetwork {
        name: "solana",
        caip2: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        family: Family::Solana,
        chain_id: 0,
        usdc: "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        eip712_name: "",
        eip712_version: "",
        default_rpc: "https://api.mainnet-beta.solana.com",
    },
    KnownNetwork {
        name: "solana-devnet",
        caip2: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        family: Family::Solana,
        chain_id: 0,
        usdc: "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU",
        eip712_name: "",
        eip712_version: "",
        default_rpc: "https://api.devnet.solana.com",
    },
];

/// Finds a built-in network by its v1 name or its CAIP-2 id.
pub fn builtin(id: &str) -> Option<&'static KnownNetwork> {
    BUILTIN.iter().find(|n| n.name == id || n.caip2 == id)
}

/// A network as a gateway accepts it: the built-in facts with the operator's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The v1 name (`base`), also the key under `[networks]` in the config.
    pub name: String,
    /// The v2 CAIP-2 id (`eip155:8453`).
    pub caip2: String,
    pub family: Family,
    pub chain_id: u64,
    /// The USDC contract (checksummed) or mint, exactly as sent in requirements.
    pub asset: String,
    pub eip712_name: String,
    pub eip712_version: String,
    /// USDC has 6 decimals everywhere.
    pub decimals: u8,
    /// Solana: the gateway's fee payer, sent as the requirement's `extra.feePayer`.
    pub fee_payer: Option<String>,
}

impl Network {
    /// True when `id` names this network in either version's vocabulary.
    pub fn is_named(&self, id: &str) -> bool {
        self.name == id || self.caip2 == id
    }

    /// Builds a network from a built-in entry, unchanged.
    pub fn from_known(k: &KnownNetwork) -> Self {
        Network {
            name: k.name.to_string(),
            caip2: k.caip2.to_string(),
            family: k.family,
            chain_id: k.chain_id,
            asset: k.usdc.to_string(),
            eip712_name: k.eip712_name.to_string(),
            eip712_version: k.eip712_version.to_string(),
            decimals: 6,
            fee_payer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_either_name() {
        assert_eq!(builtin("base").unwrap().chain_id, 8453);
        assert_eq!(builtin("eip155:84532").unwrap().name, "base-sepolia");
        assert_eq!(builtin("solana-devnet").unwrap().family, Family::Solana);
        assert!(builtin("eip155:999").is_none());
    }

    #[test]
    fn caip2_matches_chain_id_for_every_evm_network() {
        for n in BUILTIN.iter().filter(|n| n.family == Family::Evm) {
            assert_eq!(n.caip2, format!("eip155:{}", n.chain_id), "{}", n.name);
        }
    }
}
