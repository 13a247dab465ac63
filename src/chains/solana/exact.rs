//! The `exact` scheme on Solana: the client's partially signed transaction, decoded and checked
//! instruction by instruction before the gateway signs anything. Pure: no I/O.
//!
//! ../shared/x402/SOLANA.md lists the checks; each failure has its own reason, named as the
//! reference implementations name it.

use base64::Engine;
use sha2::{Digest, Sha256};
use solana_message::VersionedMessage;
use solana_pubkey::Pubkey;
use solana_transaction::versioned::VersionedTransaction;

use crate::chains::Rejection;
use crate::x402::AmountMatch;

pub const TOKEN_PROGRAM: Pubkey = Pubkey::from_str_const("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
pub const TOKEN_2022_PROGRAM: Pubkey = Pubkey::from_str_const("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb");
pub const ASSOCIATED_TOKEN_PROGRAM: Pubkey = Pubkey::from_str_const("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL");
pub const COMPUTE_BUDGET_PROGRAM: Pubkey = Pubkey::from_str_const("ComputeBudget111111111111111111111111111111");
pub const MEMO_PROGRAM: Pubkey = Pubkey::from_str_const("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
/// Lighthouse assertions, which Phantom and Solflare append to what they sign.
pub const LIGHTHOUSE_PROGRAM: Pubkey = Pubkey::from_str_const("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95");

/// The reasons, as the reference implementations name them.
pub mod reason {
    pub const DECODE: &str = "invalid_exact_svm_payload_transaction_could_not_be_decoded";
    pub const TRANSACTION: &str = "invalid_exact_svm_payload_transaction";
    pub const LENGTH: &str = "invalid_exact_svm_payload_transaction_instructions_length";
    pub const COMPUTE_LIMIT: &str = "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction";
    pub const COMPUTE_LIMIT_HIGH: &str =
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high";
    pub const COMPUTE_PRICE: &str = "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction";
    pub const COMPUTE_PRICE_HIGH: &str =
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high";
    pub const NO_TRANSFER: &str = "invalid_exact_svm_payload_no_transfer_instruction";
    pub const MINT: &str = "invalid_exact_svm_payload_mint_mismatch";
    pub const RECIPIENT: &str = crate::x402::reason::SVM_RECIPIENT;
    pub const AMOUNT: &str = "invalid_exact_svm_payload_amount_mismatch";
    pub const MEMO: &str = "invalid_exact_svm_payload_memo_mismatch";
    pub const UNKNOWN_INSTRUCTION: &str = "invalid_exact_svm_payload_unknown_optional_instruction";
    pub const FEE_PAYER_IN_ACCOUNTS: &str =
        "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts";
    pub const FEE_PAYER_TRANSFERRING: &str = "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds";
    pub const FEE_PAYER_NOT_OURS: &str = "fee_payer_not_managed_by_facilitator";
    pub const SIGNERS: &str = "invalid_exact_svm_payload_excessive_signers";
    pub const SIGNATURE: &str = "invalid_exact_svm_payload_signature_invalid";
    pub const SIMULATION: &str = "transaction_simulation_failed";
    pub const FAILED: &str = "transaction_failed";
}

/// What the gateway lets a client's transaction ask of its fee payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most compute units a transaction may request (`SetComputeUnitLimit`).
    pub max_compute_units: u32,
    /// Highest priority fee, in micro-lamports per compute unit (`SetComputeUnitPrice`).
    pub max_compute_unit_price: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_compute_units: crate::config::SOLANA_MAX_COMPUTE_UNITS,
            max_compute_unit_price: crate::config::SOLANA_MAX_COMPUTE_UNIT_PRICE,
        }
    }
}

/// What a route asks for, in Solana's terms.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub mint: &'a Pubkey,
    /// The receiving wallet (owner), not its token account.
    pub pay_to: &'a Pubkey,
    pub amount: u64,
    pub amount_match: AmountMatch,
    pub decimals: u8,
    /// The gateway's fee payer (the requirement's `extra.feePayer`).
    pub fee_payer: &'a Pubkey,
    pub memo: Option<&'a str>,
}

/// A client's transaction that passed every offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSolTransfer {
    /// As the client sent it: its own signature in place, the fee payer's slot still empty.
    pub tx: VersionedTransaction,
    /// The serialized message (what every signature signs).
    pub message: Vec<u8>,
    /// The transfer's authority: the payer.
    pub authority: Pubkey,
    pub source: Pubkey,
    pub destination: Pubkey,
    pub amount: u64,
}

impl CheckedSolTransfer {
    /// SHA-256 of the message, hex: the replay key. A client can re-sign the same message (new
    /// bytes, same transfer, and the chain would deduplicate it), so the key is the message, never
    /// the base64 text.
    pub fn message_hash(&self) -> String {
        let d = Sha256::digest(&self.message);
        let mut s = String::with_capacity(64);
        for b in d {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The payload as the client sent it (base64 of the wire transaction).
    pub fn to_base64(&self) -> String {
        to_wire_base64(&self.tx)
    }
}

/// The associated token account of `owner` for `mint` under `token_program`.
pub fn associated_token_account(owner: &Pubkey, mint: &Pubkey, token_program: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(
        &[owner.as_ref(), token_program.as_ref(), mint.as_ref()],
        &ASSOCIATED_TOKEN_PROGRAM,
    )
    .0
}

/// Decodes `{"transaction": "<base64>"}`'s transaction.
pub fn decode(b64: &str) -> Result<VersionedTransaction, Rejection> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| Rejection::new(reason::DECODE, format!("payload.transaction is not base64: {e}")))?;
    if bytes.len() > 1232 {
        return Err(Rejection::new(
            reason::DECODE,
            format!(
                "payload.transaction is {} bytes; a Solana transaction is at most 1232",
                bytes.len()
            ),
        ));
    }
    let tx: VersionedTransaction = bincode::deserialize(&bytes).map_err(|e| {
        Rejection::new(
            reason::DECODE,
            format!("payload.transaction is not a Solana transaction: {e}"),
        )
    })?;
    tx.sanitize()
        .map_err(|e| Rejection::new(reason::DECODE, format!("payload.transaction is malformed: {e}")))?;
    Ok(tx)
}

/// Every check of the `exact` scheme that needs no chain, in order.
pub fn check(tx: VersionedTransaction, want: &Expected<'_>, limits: &Limits) -> Result<CheckedSolTransfer, Rejection> {
    if tx.message.address_table_lookups().is_some_and(|l| !l.is_empty()) {
        return Err(Rejection::new(
            reason::TRANSACTION,
            "the transaction uses address lookup tables, which this gateway does not resolve; build it with static account keys",
        ));
    }
    let keys = tx.message.static_account_keys();
    let header = *tx.message.header();
    let signers = header.num_required_signatures as usize;
    if keys.first() != Some(want.fee_payer) {
        return Err(Rejection::new(
            reason::FEE_PAYER_NOT_OURS,
            format!(
                "the transaction's fee payer is {}, not this gateway's ({}); use the requirement's extra.feePayer",
                keys.first().map(|k| k.to_string()).unwrap_or_default(),
                want.fee_payer
            ),
        ));
    }
    let ixs = tx.message.instructions();
    if !(3..=7).contains(&ixs.len()) {
        return Err(Rejection::new(
            reason::LENGTH,
            format!("the transaction has {} instructions; expected 3 to 7 (compute limit, compute price, transferChecked, then only Memo or Lighthouse)", ixs.len()),
        ));
    }
    let program = |i: usize| keys.get(ixs[i].program_id_index as usize).copied().unwrap_or_default();

    // [0] SetComputeUnitLimit, [1] SetComputeUnitPrice.
    let d = &ixs[0].data;
    if program(0) != COMPUTE_BUDGET_PROGRAM || d.len() != 5 || d[0] != 2 {
        return Err(Rejection::new(
            reason::COMPUTE_LIMIT,
            "instruction 0 must be Compute Budget SetComputeUnitLimit",
        ));
    }
    let units = u32::from_le_bytes(d[1..5].try_into().expect("4 bytes"));
    if units > limits.max_compute_units {
        return Err(Rejection::new(
            reason::COMPUTE_LIMIT_HIGH,
            format!(
                "the transaction asks for {units} compute units; this gateway pays for at most {}",
                limits.max_compute_units
            ),
        ));
    }
    let d = &ixs[1].data;
    if program(1) != COMPUTE_BUDGET_PROGRAM || d.len() != 9 || d[0] != 3 {
        return Err(Rejection::new(
            reason::COMPUTE_PRICE,
            "instruction 1 must be Compute Budget SetComputeUnitPrice",
        ));
    }
    let price = u64::from_le_bytes(d[1..9].try_into().expect("8 bytes"));
    if price > limits.max_compute_unit_price {
        return Err(Rejection::new(
            reason::COMPUTE_PRICE_HIGH,
            format!(
                "the transaction's priority fee is {price} micro-lamports per unit; this gateway pays at most {}",
                limits.max_compute_unit_price
            ),
        ));
    }

    // [2] TransferChecked(source, mint, destination, authority, amount, decimals).
    let token_program = program(2);
    let t = &ixs[2];
    if (token_program != TOKEN_PROGRAM && token_program != TOKEN_2022_PROGRAM)
        || t.data.len() != 10
        || t.data[0] != 12
        || t.accounts.len() != 4
    {
        return Err(Rejection::new(
            reason::NO_TRANSFER,
            "instruction 2 must be an SPL Token (or Token-2022) TransferChecked with a single-signer authority",
        ));
    }
    let account = |i: usize| keys.get(t.accounts[i] as usize).copied().unwrap_or_default();
    let (source, mint, destination, authority) = (account(0), account(1), account(2), account(3));
    let amount = u64::from_le_bytes(t.data[1..9].try_into().expect("8 bytes"));
    let payer_text = authority.to_string();
    let reject = |r: &'static str, d: String| Rejection::new(r, d).with_payer(payer_text.clone());

    // The fee payer moves no funds and appears in no instruction: otherwise the client's
    // transaction could spend what the gateway signs for.
    if authority == *want.fee_payer || source == *want.fee_payer {
        return Err(reject(
            reason::FEE_PAYER_TRANSFERRING,
            "the transfer's authority or source is the gateway's fee payer".into(),
        ));
    }
    for (i, ix) in ixs.iter().enumerate() {
        if ix
            .accounts
            .iter()
            .any(|&a| keys.get(a as usize) == Some(want.fee_payer))
        {
            return Err(reject(
                reason::FEE_PAYER_IN_ACCOUNTS,
                format!("instruction {i} names the gateway's fee payer among its accounts"),
            ));
        }
    }
    // Signers: the fee payer and the transfer's authority, nothing else.
    if signers != 2 || keys.get(1) != Some(&authority) {
        return Err(reject(
            reason::SIGNERS,
            format!("the transaction needs {signers} signatures; expected exactly 2 (the fee payer, then the transfer's authority)"),
        ));
    }
    if tx.signatures.len() != signers {
        return Err(reject(
            reason::SIGNATURE,
            format!(
                "the transaction carries {} signatures for {signers} signers",
                tx.signatures.len()
            ),
        ));
    }
    if mint != *want.mint {
        return Err(reject(
            reason::MINT,
            format!("the transfer moves mint {mint}, not USDC ({})", want.mint),
        ));
    }
    let ata = associated_token_account(want.pay_to, want.mint, &token_program);
    if destination != ata {
        return Err(reject(
            reason::RECIPIENT,
            format!(
                "the transfer goes to {destination}, not to {}'s USDC account {ata}",
                want.pay_to
            ),
        ));
    }
    let amount_ok = match want.amount_match {
        AmountMatch::Exact => amount == want.amount,
        AmountMatch::AtLeast => amount >= want.amount,
    };
    if !amount_ok || t.data[9] != want.decimals {
        return Err(reject(
            reason::AMOUNT,
            format!(
                "the transfer is {amount} atomic units (decimals {}); the price is {} (decimals {})",
                t.data[9], want.amount, want.decimals
            ),
        ));
    }
    // After the transfer: only Memo or Lighthouse.
    let mut memos = Vec::new();
    for i in 3..ixs.len() {
        match program(i) {
            p if p == MEMO_PROGRAM => memos.push(&ixs[i].data),
            p if p == LIGHTHOUSE_PROGRAM => {}
            p => {
                return Err(reject(
                    reason::UNKNOWN_INSTRUCTION,
                    format!("instruction {i} calls {p}; only Memo and Lighthouse may follow the transfer"),
                ))
            }
        }
    }
    if let Some(m) = want.memo {
        if memos.len() != 1 || memos[0].as_slice() != m.as_bytes() {
            return Err(reject(
                reason::MEMO,
                format!(
                    "the transaction must carry exactly one Memo equal to the requirement's extra.memo ({} found)",
                    memos.len()
                ),
            ));
        }
    }
    // The client's own signature, checked here: a simulation can be run without signature checks,
    // and a gateway that relies on it would co-sign and pay for forgeries.
    let message = tx.message.serialize();
    for i in 1..signers {
        if !tx.signatures[i].verify(keys[i].as_ref(), &message) {
            return Err(reject(
                reason::SIGNATURE,
                format!("signature {i} is not {}'s signature of this message", keys[i]),
            ));
        }
    }
    Ok(CheckedSolTransfer {
        tx,
        message,
        authority,
        source,
        destination,
        amount,
    })
}

/// A payment as the official client builds it (for tests, benchmarks and example clients).
#[derive(Debug, Clone)]
pub struct Payment {
    pub client: Pubkey,
    pub fee_payer: Pubkey,
    pub pay_to: Pubkey,
    pub mint: Pubkey,
    pub amount: u64,
    pub blockhash: solana_hash::Hash,
    /// The memo's bytes (the official client writes 16 random bytes in hex, making each unique).
    pub memo: Vec<u8>,
}

/// The official client's message: SetComputeUnitLimit(20,000), SetComputeUnitPrice(1),
/// TransferChecked from the client's USDC account to `pay_to`'s, and a Memo. Keys: fee payer,
/// client (signers); source, destination (writable); mint and programs (read-only).
pub fn payment_message(p: &Payment) -> solana_message::v0::Message {
    use solana_message::compiled_instruction::CompiledInstruction;
    let source = associated_token_account(&p.client, &p.mint, &TOKEN_PROGRAM);
    let dest = associated_token_account(&p.pay_to, &p.mint, &TOKEN_PROGRAM);
    let mut limit = vec![2];
    limit.extend_from_slice(&20_000u32.to_le_bytes());
    let mut price = vec![3];
    price.extend_from_slice(&1u64.to_le_bytes());
    let mut transfer = vec![12];
    transfer.extend_from_slice(&p.amount.to_le_bytes());
    transfer.push(6);
    solana_message::v0::Message {
        header: solana_message::MessageHeader {
            num_required_signatures: 2,
            num_readonly_signed_accounts: 0,
            num_readonly_unsigned_accounts: 4,
        },
        account_keys: vec![
            p.fee_payer,
            p.client,
            source,
            dest,
            p.mint,
            COMPUTE_BUDGET_PROGRAM,
            TOKEN_PROGRAM,
            MEMO_PROGRAM,
        ],
        recent_blockhash: p.blockhash,
        instructions: vec![
            CompiledInstruction::new_from_raw_parts(5, limit, vec![]),
            CompiledInstruction::new_from_raw_parts(5, price, vec![]),
            CompiledInstruction::new_from_raw_parts(6, transfer, vec![2, 4, 3, 1]),
            CompiledInstruction::new_from_raw_parts(7, p.memo.clone(), vec![]),
        ],
        address_table_lookups: vec![],
    }
}

/// Signs `m` as its second signer (the client), leaving the fee payer's slot empty.
pub fn sign_as_client(client: &solana_keypair::Keypair, m: VersionedMessage) -> VersionedTransaction {
    use solana_signer::Signer;
    let bytes = m.serialize();
    let n = m.header().num_required_signatures as usize;
    let mut sigs = vec![solana_signature::Signature::default(); n];
    if n > 1 {
        sigs[1] = client.sign_message(&bytes);
    }
    VersionedTransaction {
        signatures: sigs,
        message: m,
    }
}

/// Base64 of the wire transaction: the payload's `transaction`.
pub fn to_wire_base64(tx: &VersionedTransaction) -> String {
    base64::engine::general_purpose::STANDARD.encode(bincode::serialize(tx).expect("a transaction serializes"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use solana_keypair::Keypair;
    use solana_message::v0;
    use solana_signer::Signer;

    pub const USDC: Pubkey = Pubkey::from_str_const("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");

    pub struct Parts {
        pub fee_payer: Keypair,
        pub client: Keypair,
        pub pay_to: Pubkey,
    }

    impl Parts {
        pub fn new() -> Parts {
            Parts {
                fee_payer: Keypair::new_from_array([7; 32]),
                client: Keypair::new_from_array([9; 32]),
                pay_to: Keypair::new_from_array([11; 32]).pubkey(),
            }
        }

        pub fn expected(&self, amount: u64) -> (Pubkey, Pubkey) {
            let _ = amount;
            (self.fee_payer.pubkey(), self.pay_to)
        }

        /// What the official client builds, edited.
        pub fn build(&self, amount: u64, edit: impl FnOnce(&mut v0::Message)) -> VersionedTransaction {
            let mut m = payment_message(&Payment {
                client: self.client.pubkey(),
                fee_payer: self.fee_payer.pubkey(),
                pay_to: self.pay_to,
                mint: USDC,
                amount,
                blockhash: solana_hash::Hash::new_from_array([5; 32]),
                memo: b"0123abcd".to_vec(),
            });
            edit(&mut m);
            sign_as_client(&self.client, VersionedMessage::V0(m))
        }
    }

    fn run(p: &Parts, tx: VersionedTransaction, amount: u64) -> Result<CheckedSolTransfer, Rejection> {
        let (fp, pay_to) = p.expected(amount);
        let want = Expected {
            mint: &USDC,
            pay_to: &pay_to,
            amount,
            amount_match: AmountMatch::Exact,
            decimals: 6,
            fee_payer: &fp,
            memo: None,
        };
        // Through the wire format, as a client's payload arrives.
        check(decode(&to_wire_base64(&tx))?, &want, &Limits::default())
    }

    fn reason_of(r: Result<CheckedSolTransfer, Rejection>) -> String {
        r.expect_err("must be refused").reason.to_string()
    }

    #[test]
    fn the_official_clients_layout_passes() {
        let p = Parts::new();
        let c = run(&p, p.build(10_000, |_| {}), 10_000).unwrap();
        assert_eq!(c.authority, p.client.pubkey());
        assert_eq!(c.amount, 10_000);
        assert_eq!(c.message_hash().len(), 64);
        // A re-signed copy (same message) has the same key.
        let again = run(&p, p.build(10_000, |_| {}), 10_000).unwrap();
        assert_eq!(c.message_hash(), again.message_hash());
    }

    #[test]
    fn each_wrong_field_has_its_reason() {
        let p = Parts::new();
        assert_eq!(reason_of(run(&p, p.build(9_999, |_| {}), 10_000)), reason::AMOUNT);
        // Wrong mint: the transfer names another mint account.
        let other = Pubkey::new_from_array([3; 32]);
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.account_keys[4] = other), 10_000)),
            reason::MINT
        );
        // Wrong destination.
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.account_keys[3] = other), 10_000)),
            reason::RECIPIENT
        );
        // An instruction after the transfer that is neither Memo nor Lighthouse.
        let sys = Pubkey::from_str_const("11111111111111111111111111111111");
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.account_keys[7] = sys), 10_000)),
            reason::UNKNOWN_INSTRUCTION
        );
        // The fee payer in an instruction's accounts (the memo's).
        assert_eq!(
            reason_of(run(
                &p,
                p.build(10_000, |m| m.instructions[3].accounts = vec![0]),
                10_000
            )),
            reason::FEE_PAYER_IN_ACCOUNTS
        );
        // The fee payer as the transfer's authority.
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.instructions[2].accounts[3] = 0), 10_000)),
            reason::FEE_PAYER_TRANSFERRING
        );
        // Too many compute units; too high a price.
        assert_eq!(
            reason_of(run(
                &p,
                p.build(10_000, |m| m.instructions[0].data[1..5]
                    .copy_from_slice(&500_000u32.to_le_bytes())),
                10_000
            )),
            reason::COMPUTE_LIMIT_HIGH
        );
        assert_eq!(
            reason_of(run(
                &p,
                p.build(10_000, |m| m.instructions[1].data[1..9]
                    .copy_from_slice(&5_000_001u64.to_le_bytes())),
                10_000
            )),
            reason::COMPUTE_PRICE_HIGH
        );
        // Two instructions only.
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.instructions.truncate(2)), 10_000)),
            reason::LENGTH
        );
        // Another fee payer.
        let stranger = Pubkey::new_from_array([4; 32]);
        assert_eq!(
            reason_of(run(&p, p.build(10_000, |m| m.account_keys[0] = stranger), 10_000)),
            reason::FEE_PAYER_NOT_OURS
        );
    }

    #[test]
    fn a_bad_client_signature_is_refused_locally() {
        let p = Parts::new();
        let mut tx = p.build(10_000, |_| {});
        tx.signatures[1] = solana_signature::Signature::from([1u8; 64]);
        assert_eq!(reason_of(run(&p, tx, 10_000)), reason::SIGNATURE);
    }

    #[test]
    fn lookup_tables_and_junk_are_refused() {
        let p = Parts::new();
        let tx = p.build(10_000, |m| {
            m.address_table_lookups.push(v0::MessageAddressTableLookup {
                account_key: Pubkey::new_from_array([8; 32]),
                writable_indexes: vec![0],
                readonly_indexes: vec![],
            })
        });
        assert_eq!(reason_of(run(&p, tx, 10_000)), reason::TRANSACTION);
        assert_eq!(decode("not base64!").unwrap_err().reason, reason::DECODE);
        assert_eq!(decode("AAAA").unwrap_err().reason, reason::DECODE);
    }

    #[test]
    fn associated_token_account_matches_the_spl_derivation() {
        // Devnet: BXT1K8…'s USDC account in the devnet transfer of proof.rs's fixture.
        let owner = Pubkey::from_str_const("BXT1K8kzYXWMi6ihg7m9UqiHW4iJbJ69zumELHE9oBLe");
        let devnet_usdc = Pubkey::from_str_const("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU");
        assert_eq!(
            associated_token_account(&owner, &devnet_usdc, &TOKEN_PROGRAM).to_string(),
            "644PJ6UW8e4gQpjKdBVd4MCYasWjSECKjqd2qzdeAJY6"
        );
    }
}
