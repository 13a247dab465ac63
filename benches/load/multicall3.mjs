// Puts Multicall3 at its canonical address (0xcA11…CA11, where Base and most chains have it) on the
// local anvil, using the creation code viem ships, then re-dumps the saved state so that every run
// starts with it. Run from a folder whose node_modules has viem (the bench copy).
// usage: RPC_PORT=18545 node multicall3.mjs STATE_FILE
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { gunzipSync } from "node:zlib";
import { createPublicClient, createTestClient, createWalletClient, http } from "viem";

// viem keeps Multicall3's creation code in a module it does not export; read it from the file.
const viemDir = createRequire(import.meta.url).resolve("viem").replace(/_cjs\/index\.js$|_esm\/index\.js$/, "");
const source = readFileSync(`${viemDir}_esm/constants/contracts.js`, "utf8");
const multicall3Bytecode = source.match(/multicall3Bytecode = '(0x[0-9a-f]+)'/)[1];

const rpc = `http://127.0.0.1:${process.env.RPC_PORT ?? 18545}`;
const MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11";
const OWNER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const chain = { id: 8453, name: "anvil", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [rpc] } } };
const transport = http(rpc);
const pub = createPublicClient({ chain, transport });
const test = createTestClient({ chain, mode: "anvil", transport });
const wallet = createWalletClient({ chain, account: OWNER, transport });

if ((await pub.getCode({ address: MULTICALL3 }))?.length > 2) {
  console.log("Multicall3 already present");
} else {
  const hash = await wallet.deployContract({ abi: [], bytecode: multicall3Bytecode });
  const { contractAddress } = await pub.waitForTransactionReceipt({ hash });
  await test.setCode({ address: MULTICALL3, bytecode: await pub.getCode({ address: contractAddress }) });
  console.log(`Multicall3 at ${MULTICALL3}`);
}
if (process.argv[2]) {
  const hex = await test.request({ method: "anvil_dumpState", params: [] });
  writeFileSync(process.argv[2], gunzipSync(Buffer.from(hex.slice(2), "hex")));
  console.log(`state dumped to ${process.argv[2]}`);
}
