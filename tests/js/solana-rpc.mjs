// TEST SUPPORT, not the product: a Solana JSON-RPC server over LiteSVM (the real SVM and the real
// SPL Token program, in process), so that tollgate's Solana code talks real RPC to real
// transaction execution where no validator can run. USDC is a real 6-decimal mint at its real
// mainnet address. Tollgate's Solana support is tested on this, not on a validator.
//
//   node solana-rpc.mjs [port]      prints {"port": N} on stdout once listening (0: any free port)
//
// Standard methods: getHealth, getVersion, getSlot, getBlockHeight, getLatestBlockhash,
// isBlockhashValid, getAccountInfo, getMultipleAccounts, getBalance, getTokenAccountBalance,
// getMinimumBalanceForRentExemption, simulateTransaction, sendTransaction, getSignatureStatuses,
// getTransaction, requestAirdrop.
// Test controls (prefix tg_): tg_mintUsdc(owner, amount) gives a wallet USDC in its associated
// token account (created when missing); tg_createUsdcAccount(owner); tg_hold(bool) holds sent
// transactions unprocessed, tg_release() processes them; tg_expireBlockhash(); tg_dropAnswers(method,
// n) runs the next n calls of a method but closes the connection instead of answering;
// tg_failCalls(method, n) answers the next n calls with HTTP 503 and does nothing;
// tg_down(bool) answers every call with 503 until turned off; tg_landed() counts landed
// transactions; tg_usdcOf(owner) reads a wallet's USDC.

import http from "node:http";
import { LiteSVM } from "litesvm";
import {
  address,
  getAddressEncoder,
  getAddressDecoder,
  getBase58Decoder,
  getBase58Encoder,
  getTransactionDecoder,
  getCompiledTransactionMessageDecoder,
  lamports,
} from "@solana/kit";
import { findAssociatedTokenPda, TOKEN_PROGRAM_ADDRESS } from "@solana-program/token";

const USDC = address(process.env.USDC_MINT || "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v");
const TOKEN = TOKEN_PROGRAM_ADDRESS;
const MINT_AUTHORITY = address("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM");

const enc = getAddressEncoder();
const dec = getAddressDecoder();
const b58enc = getBase58Encoder();
const b58dec = getBase58Decoder();
const txDecoder = getTransactionDecoder();
const msgDecoder = getCompiledTransactionMessageDecoder();

const svm = new LiteSVM().withSigverify(true).withBlockhashCheck(true);
let slot = 1n;
let height = 1n;
const deadHashes = new Set();
// signature -> { slot, err, blockTime, wire, meta }
const landed = new Map();
let held = [];
let holding = false;
let down = false;
const drops = new Map();
const fails = new Map();

const TX_ERRORS = [
  "AccountInUse", "AccountLoadedTwice", "AccountNotFound", "ProgramAccountNotFound", "InsufficientFundsForFee",
  "InvalidAccountForFee", "AlreadyProcessed", "BlockhashNotFound", "CallChainTooDeep", "MissingSignatureForFee",
  "InvalidAccountIndex", "SignatureFailure", "InvalidProgramForExecution", "SanitizeFailure", "ClusterMaintenance",
  "AccountBorrowOutstanding", "WouldExceedMaxBlockCostLimit", "UnsupportedVersion", "InvalidWritableAccount",
  "WouldExceedMaxAccountCostLimit", "WouldExceedAccountDataBlockLimit", "TooManyAccountLocks",
  "AddressLookupTableNotFound", "InvalidAddressLookupTableOwner", "InvalidAddressLookupTableData",
  "InvalidAddressLookupTableIndex", "InvalidRentPayingAccount", "WouldExceedMaxVoteCostLimit",
  "WouldExceedAccountDataTotalLimit", "MaxLoadedAccountsDataSizeExceeded", "ResanitizationNeeded",
];
const IX_ERRORS = [
  "GenericError", "InvalidArgument", "InvalidInstructionData", "InvalidAccountData", "AccountDataTooSmall",
  "InsufficientFunds", "IncorrectProgramId", "MissingRequiredSignature", "AccountAlreadyInitialized",
  "UninitializedAccount", "UnbalancedInstruction", "ModifiedProgramId", "ExternalAccountLamportSpend",
  "ExternalAccountDataModified", "ReadonlyLamportChange", "ReadonlyDataModified", "DuplicateAccountIndex",
  "ExecutableModified", "RentEpochModified", "NotEnoughAccountKeys", "AccountDataSizeChanged",
  "AccountNotExecutable", "AccountBorrowFailed", "AccountBorrowOutstanding", "DuplicateAccountOutOfSync",
  "InvalidError", "ExecutableDataModified", "ExecutableLamportChange", "ExecutableAccountNotRentExempt",
  "UnsupportedProgramId", "CallDepth", "MissingAccount", "ReentrancyNotAllowed", "MaxSeedLengthExceeded",
  "InvalidSeeds", "InvalidRealloc", "ComputationalBudgetExceeded", "PrivilegeEscalation",
  "ProgramEnvironmentSetupFailure", "ProgramFailedToComplete", "ProgramFailedToCompile", "Immutable",
  "IncorrectAuthority", "AccountNotRentExempt", "InvalidAccountOwner", "ArithmeticOverflow", "UnsupportedSysvar",
  "IllegalOwner", "MaxAccountsDataAllocationsExceeded", "MaxAccountsExceeded", "MaxInstructionTraceLengthExceeded",
  "BuiltinProgramsMustConsumeComputeUnits", "BorshIoError",
];

// The RPC's JSON form of a LiteSVM transaction error.
function errJson(e) {
  if (typeof e === "number") return TX_ERRORS[e] ?? `Unknown${e}`;
  if (e && typeof e.err === "function") {
    const ie = e.err();
    let inner;
    if (typeof ie === "number") inner = IX_ERRORS[ie] ?? `Unknown${ie}`;
    else if (ie && "code" in ie) inner = { Custom: ie.code };
    else inner = { BorshIoError: String(ie?.msg ?? "") };
    return { InstructionError: [e.index, inner] };
  }
  if (e && "accountIndex" in e) return { InsufficientFundsForRent: { account_index: e.accountIndex } };
  if (e && "index" in e) return { DuplicateInstruction: e.index };
  return String(e);
}

// Errors that mean the transaction never landed (a node drops it; no status ever appears).
const NEVER_LANDS = new Set(["AccountNotFound", "InsufficientFundsForFee", "InvalidAccountForFee", "AlreadyProcessed",
  "BlockhashNotFound", "MissingSignatureForFee", "SignatureFailure", "SanitizeFailure"]);

function u64le(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function setMint() {
  const data = Buffer.alloc(82);
  data.writeUInt32LE(1, 0); // mint authority: Some
  Buffer.from(enc.encode(MINT_AUTHORITY)).copy(data, 4);
  u64le(1_000_000_000_000_000n).copy(data, 36); // supply
  data[44] = 6; // decimals
  data[45] = 1; // initialized
  data.writeUInt32LE(0, 46); // freeze authority: None
  svm.setAccount({
    address: USDC,
    data: new Uint8Array(data),
    executable: false,
    lamports: lamports(svm.minimumBalanceForRentExemption(82n)),
    programAddress: TOKEN,
    space: 82n,
  });
}

function tokenAccountData(mint, owner, amount) {
  const data = Buffer.alloc(165);
  Buffer.from(enc.encode(mint)).copy(data, 0);
  Buffer.from(enc.encode(owner)).copy(data, 32);
  u64le(amount).copy(data, 64);
  data[108] = 1; // initialized
  return new Uint8Array(data);
}

async function ata(owner) {
  const [a] = await findAssociatedTokenPda({ mint: USDC, owner: address(owner), tokenProgram: TOKEN });
  return a;
}

function readTokenAccount(addr) {
  const acc = svm.getAccount(addr);
  if (!acc.exists || acc.programAddress !== TOKEN || acc.data.length !== 165) return null;
  const d = Buffer.from(acc.data);
  return { mint: dec.decode(d.subarray(0, 32)), owner: dec.decode(d.subarray(32, 64)), amount: d.readBigUInt64LE(64) };
}

function decimalsOf(mint) {
  const acc = svm.getAccount(mint);
  return acc.exists && acc.data.length >= 45 ? acc.data[44] : 0;
}

function uiAmount(amount, decimals) {
  const s = amount.toString().padStart(decimals + 1, "0");
  const str = decimals ? `${s.slice(0, -decimals)}.${s.slice(-decimals)}`.replace(/\.?0+$/, "") : s;
  return { amount: amount.toString(), decimals, uiAmount: Number(str), uiAmountString: str };
}

function tokenBalances(keys) {
  const out = [];
  keys.forEach((k, i) => {
    const t = readTokenAccount(k);
    if (t) out.push({ accountIndex: i, mint: t.mint, owner: t.owner, programId: TOKEN, uiTokenAmount: uiAmount(t.amount, decimalsOf(t.mint)) });
  });
  return out;
}

function accountJson(addr) {
  const a = svm.getAccount(address(addr));
  if (!a.exists) return null;
  return {
    data: [Buffer.from(a.data).toString("base64"), "base64"],
    executable: a.executable,
    lamports: Number(a.lamports),
    owner: a.programAddress,
    rentEpoch: "__U64_MAX__", // written as the integer the real RPC sends (see below)
    space: a.data.length,
  };
}

function decodeWire(b64) {
  const bytes = Buffer.from(b64, "base64");
  const tx = txDecoder.decode(new Uint8Array(bytes));
  const msg = msgDecoder.decode(tx.messageBytes);
  return { tx, msg, bytes };
}

function firstSignature(tx) {
  const sig = Object.values(tx.signatures)[0];
  return sig ? b58dec.decode(sig) : "1111111111111111111111111111111111111111111111111111111111111111";
}

const ctx = () => ({ context: { slot: Number(slot), apiVersion: "3.1.0" } });

function process_(b64) {
  const { tx, msg, bytes } = decodeWire(b64);
  const sig = firstSignature(tx);
  if (landed.has(sig)) return sig; // the chain deduplicates by signature
  if (deadHashes.has(msg.lifetimeToken)) return sig; // expired: dropped, never lands
  const keys = msg.staticAccounts;
  const pre = tokenBalances(keys);
  const preBal = keys.map((k) => Number(svm.getBalance(k) ?? 0n));
  const r = svm.sendTransaction(tx);
  const failed = typeof r.err === "function";
  const meta = failed ? r.meta() : r;
  const err = failed ? errJson(r.err()) : null;
  if (err !== null && typeof err === "string" && NEVER_LANDS.has(err)) return sig;
  slot += 1n;
  height += 1n;
  landed.set(sig, {
    slot: Number(slot),
    err,
    blockTime: Math.floor(Date.now() / 1000),
    wire: bytes,
    msg,
    meta: {
      err,
      status: err === null ? { Ok: null } : { Err: err },
      fee: 5000 * msg.header.numSignerAccounts,
      preBalances: preBal,
      postBalances: keys.map((k) => Number(svm.getBalance(k) ?? 0n)),
      preTokenBalances: pre,
      postTokenBalances: tokenBalances(keys),
      logMessages: meta.logs(),
      innerInstructions: [],
      loadedAddresses: { writable: [], readonly: [] },
      rewards: [],
      computeUnitsConsumed: Number(meta.computeUnitsConsumed()),
    },
  });
  return sig;
}

function simulate(b64, cfg) {
  const { tx } = decodeWire(b64);
  const verify = cfg?.sigVerify === true;
  if (!verify) svm.withSigverify(false);
  let r;
  try {
    r = svm.simulateTransaction(tx);
  } finally {
    if (!verify) svm.withSigverify(true);
  }
  const failed = typeof r.err === "function";
  const meta = failed ? r.meta() : r.meta();
  return {
    ...ctx(),
    value: {
      err: failed ? errJson(r.err()) : null,
      logs: meta.logs(),
      accounts: null,
      unitsConsumed: Number(meta.computeUnitsConsumed()),
      returnData: null,
      innerInstructions: null,
    },
  };
}

function rpcError(code, message, data) {
  const e = new Error(message);
  e.rpc = { code, message, data };
  return e;
}

const methods = {
  getHealth: () => "ok",
  getVersion: () => ({ "solana-core": "3.1.0", "feature-set": 0 }),
  getSlot: () => Number(slot),
  getBlockHeight: () => Number(height),
  getGenesisHash: () => "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp1111111111111",
  getLatestBlockhash: () => ({ ...ctx(), value: { blockhash: svm.latestBlockhash(), lastValidBlockHeight: Number(height + 150n) } }),
  isBlockhashValid: ([h]) => ({ ...ctx(), value: h === svm.latestBlockhash() && !deadHashes.has(h) }),
  getAccountInfo: ([a]) => ({ ...ctx(), value: accountJson(a) }),
  getMultipleAccounts: ([list]) => ({ ...ctx(), value: list.map(accountJson) }),
  getBalance: ([a]) => ({ ...ctx(), value: Number(svm.getBalance(address(a)) ?? 0n) }),
  getMinimumBalanceForRentExemption: ([n]) => Number(svm.minimumBalanceForRentExemption(BigInt(n))),
  getTokenAccountBalance: ([a]) => {
    const t = readTokenAccount(address(a));
    if (!t) throw rpcError(-32602, "Invalid param: could not find account");
    return { ...ctx(), value: uiAmount(t.amount, decimalsOf(t.mint)) };
  },
  simulateTransaction: ([b64, cfg]) => simulate(b64, cfg),
  sendTransaction: ([b64, cfg]) => {
    if (!cfg?.skipPreflight) {
      const sim = simulate(b64, { sigVerify: true });
      if (sim.value.err) throw rpcError(-32002, `Transaction simulation failed: ${JSON.stringify(sim.value.err)}`, sim.value);
    }
    if (holding) {
      held.push(b64);
      return firstSignature(decodeWire(b64).tx);
    }
    return process_(b64);
  },
  getSignatureStatuses: ([sigs]) => ({
    ...ctx(),
    value: sigs.map((s) => {
      const l = landed.get(s);
      if (!l) return null;
      return { slot: l.slot, confirmations: null, err: l.err, status: l.meta.status, confirmationStatus: "finalized" };
    }),
  }),
  getTransaction: ([s, cfg]) => {
    const l = landed.get(s);
    if (!l) return null;
    const encoding = (typeof cfg === "string" ? cfg : cfg?.encoding) || "json";
    let transaction;
    if (encoding === "base64") transaction = [Buffer.from(l.wire).toString("base64"), "base64"];
    else {
      const m = l.msg;
      const ix = m.instructions.map((i) => ({
        programIdIndex: i.programAddressIndex,
        accounts: [...(i.accountIndices ?? [])],
        data: b58dec.decode(i.data ?? new Uint8Array()),
        stackHeight: null,
      }));
      const { tx } = decodeWire(Buffer.from(l.wire).toString("base64"));
      transaction = {
        signatures: Object.values(tx.signatures).map((x) => (x ? b58dec.decode(x) : "")),
        message: {
          accountKeys: m.staticAccounts,
          header: {
            numRequiredSignatures: m.header.numSignerAccounts,
            numReadonlySignedAccounts: m.header.numReadonlySignerAccounts,
            numReadonlyUnsignedAccounts: m.header.numReadonlyNonSignerAccounts,
          },
          recentBlockhash: m.lifetimeToken,
          instructions: ix,
          addressTableLookups: [],
        },
      };
    }
    return { slot: l.slot, blockTime: l.blockTime, meta: l.meta, transaction, version: 0 };
  },
  requestAirdrop: ([a, n]) => {
    const r = svm.airdrop(address(a), lamports(BigInt(n)));
    return r && typeof r.signature === "function" ? b58dec.decode(r.signature()) : "airdrop";
  },
  tg_mintUsdc: async ([owner, amount]) => {
    const a = await ata(owner);
    const cur = readTokenAccount(a);
    const total = (cur ? cur.amount : 0n) + BigInt(amount);
    svm.setAccount({
      address: a,
      data: tokenAccountData(USDC, address(owner), total),
      executable: false,
      lamports: lamports(svm.minimumBalanceForRentExemption(165n)),
      programAddress: TOKEN,
      space: 165n,
    });
    return { account: a, amount: total.toString() };
  },
  tg_createUsdcAccount: async ([owner]) => methods.tg_mintUsdc([owner, 0]),
  tg_hold: ([on]) => {
    holding = !!on;
    return holding;
  },
  tg_release: () => {
    const n = held.length;
    for (const b64 of held) process_(b64);
    held = [];
    return n;
  },
  tg_expireBlockhash: () => {
    deadHashes.add(svm.latestBlockhash());
    svm.expireBlockhash();
    height += 151n;
    return svm.latestBlockhash();
  },
  tg_dropAnswers: ([m, n]) => drops.set(m, n) && n,
  tg_failCalls: ([m, n]) => fails.set(m, n) && n,
  tg_down: ([on]) => (down = !!on),
  tg_landed: () => landed.size,
  tg_usdcOf: async ([owner]) => {
    const t = readTokenAccount(await ata(owner));
    return t ? t.amount.toString() : "0";
  },
};

setMint();

async function handle(body) {
  const { id, method, params } = body;
  const f = methods[method];
  if (!f) return { jsonrpc: "2.0", id, error: { code: -32601, message: `Method not found: ${method}` } };
  try {
    return { jsonrpc: "2.0", id, result: await f(params ?? []) };
  } catch (e) {
    return { jsonrpc: "2.0", id, error: e.rpc ?? { code: -32603, message: String(e?.message ?? e) } };
  }
}

const server = http.createServer((req, res) => {
  let chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString() || "null");
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      return res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } }));
    }
    const one = Array.isArray(body) ? body[0] : body;
    const m = one?.method ?? "";
    if (down && !m.startsWith("tg_")) {
      res.writeHead(503);
      return res.end("down (test support)");
    }
    if ((fails.get(m) ?? 0) > 0) {
      fails.set(m, fails.get(m) - 1);
      res.writeHead(503);
      return res.end("failing on purpose (test support)");
    }
    const out = Array.isArray(body) ? await Promise.all(body.map(handle)) : await handle(body);
    if ((drops.get(m) ?? 0) > 0) {
      drops.set(m, drops.get(m) - 1);
      return req.socket.destroy();
    }
    res.writeHead(200, { "content-type": "application/json" });
    const text = JSON.stringify(out, (_k, v) => (typeof v === "bigint" ? Number(v) : v));
    res.end(text.replaceAll('"__U64_MAX__"', "18446744073709551615"));
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port, usdc: USDC }) + "\n");
});
