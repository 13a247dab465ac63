// The reference x402 facilitator (@x402/core x402Facilitator + @x402/evm exact scheme, v1 and v2),
// settling with a viem wallet on the local anvil. Test support for tollgate's facilitator mode.
// usage: RELAYER_KEY=0x… node facilitator.mjs PORT RPC_URL [TOKEN]
import http from "node:http";
import { createWalletClient, defineChain, http as viemHttp, publicActions } from "viem";
import { base } from "viem/chains";
import { privateKeyToAccount, nonceManager } from "viem/accounts";
import { x402Facilitator } from "@x402/core/facilitator";
import { toFacilitatorEvmSigner } from "@x402/evm";
import { registerExactEvmScheme } from "@x402/evm/exact/facilitator";

const [port, rpc, token] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const chain = defineChain({ ...base, rpcUrls: { default: { http: [rpc] } } });
const account = privateKeyToAccount(process.env.RELAYER_KEY, { nonceManager });
const viem = createWalletClient({ account, chain, transport: viemHttp(rpc) }).extend(publicActions);
const signer = toFacilitatorEvmSigner({
  address: account.address,
  getCode: (a) => viem.getCode(a),
  readContract: (a) => viem.readContract({ ...a, args: a.args || [] }),
  verifyTypedData: (a) => viem.verifyTypedData(a),
  writeContract: (a) => viem.writeContract({ ...a, args: a.args || [] }),
  sendTransaction: (a) => viem.sendTransaction(a),
  waitForTransactionReceipt: (a) => viem.waitForTransactionReceipt({ ...a, pollingInterval: 50 }),
});
const facilitator = new x402Facilitator();
registerExactEvmScheme(facilitator, { signer, networks: "eip155:8453" });

const seen = { verify: 0, settle: 0, unauthorized: 0 };
const json = (res, code, v) => { res.writeHead(code, { "content-type": "application/json" }); res.end(JSON.stringify(v)); };
http.createServer(async (req, res) => {
  if (token && req.headers.authorization !== `Bearer ${token}`) { seen.unauthorized++; return json(res, 401, { error: "unauthorized" }); }
  if (req.method === "GET" && req.url === "/supported") return json(res, 200, facilitator.getSupported());
  if (req.method === "GET" && req.url === "/seen") return json(res, 200, seen);
  let body = "";
  for await (const chunk of req) body += chunk;
  try {
    const { paymentPayload, paymentRequirements } = JSON.parse(body);
    if (req.url === "/verify") { seen.verify++; return json(res, 200, await facilitator.verify(paymentPayload, paymentRequirements)); }
    if (req.url === "/settle") { seen.settle++; return json(res, 200, await facilitator.settle(paymentPayload, paymentRequirements)); }
    json(res, 404, { error: "not found" });
  } catch (e) {
    json(res, 500, { error: String(e?.message ?? e) });
  }
}).listen(port, "127.0.0.1", () => console.log(`facilitator listening on ${port}`));
