// Pays for one request through tollgate with the official v2 client (@x402/fetch + @x402/evm).
// usage: PAYER_KEY=0x… node pay-v2.mjs URL   → prints one JSON line {status, body, paymentResponse}
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { privateKeyToAccount } from "viem/accounts";

const url = process.argv[2];
const account = privateKeyToAccount(process.env.PAYER_KEY);
const client = new x402Client().register("eip155:8453", new ExactEvmScheme(account));
const payingFetch = wrapFetchWithPayment(fetch, client);
const res = await payingFetch(url, { method: "GET" });
const header = res.headers.get("payment-response");
const out = {
  status: res.status,
  body: await res.text(),
  paymentResponse: header ? decodePaymentResponseHeader(header) : null,
};
console.log(JSON.stringify(out));
process.exit(res.status === 200 ? 0 : 1);
