// Pre-generates N facilitator request bodies ({x402Version, paymentPayload, paymentRequirements}) the way a
// stock resource server sends them: payloads signed by the official client (@x402/core + @x402/evm exact),
// for 0.001 USDC on eip155:8453 to the bench payee, unique EIP-3009 nonces. No server needed.
// usage: node fac-pregen.mjs N OUTFILE
import { writeFileSync } from "node:fs";
import { createPublicClient, http } from "viem";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";
import * as C from "./config.mjs";

const N = Number(process.argv[2] ?? 300), out = process.argv[3] ?? "run/fac-bodies.json";
const chain = createPublicClient({ chain: C.localBase, transport: http(C.RPC_URL) });
const abi = [
  { type: "function", name: "name", stateMutability: "view", inputs: [], outputs: [{ type: "string" }] },
  { type: "function", name: "version", stateMutability: "view", inputs: [], outputs: [{ type: "string" }] },
];
const [name, version] = await Promise.all(["name", "version"].map((f) => chain.readContract({ address: C.USDC, abi, functionName: f })));
const requirement = { scheme: "exact", network: C.NETWORK, amount: String(C.PRICE_ATOMIC), asset: C.USDC, payTo: C.PAYEE,
  maxTimeoutSeconds: 600, extra: { name, version } };
const paymentRequired = { x402Version: 2, resource: { url: "http://127.0.0.1/paid", description: "paid JSON", mimeType: "application/json" },
  accepts: [requirement] };
const client = new x402HTTPClient(new x402Client().register(C.NETWORK, new ExactEvmScheme(privateKeyToAccount(C.PAYER_KEY))));
const bodies = [];
for (let i = 0; i < N; i++) {
  const paymentPayload = await client.createPaymentPayload(paymentRequired);
  bodies.push({ x402Version: 2, paymentPayload, paymentRequirements: paymentPayload.accepted });
}
if (new Set(bodies.map((b) => b.paymentPayload.payload.authorization.nonce)).size !== N) throw new Error("duplicate nonces");
writeFileSync(out, JSON.stringify(bodies));
console.log(`fac-pregen: ${N} bodies -> ${out}`);
