// Pays for one request through tollgate with the official v1 client (x402-fetch).
// usage: PAYER_KEY=0x… node pay-v1.mjs URL   → prints one JSON line {status, body, paymentResponse}
import { wrapFetchWithPayment, createSigner, decodeXPaymentResponse } from "x402-fetch";

const url = process.argv[2];
const signer = await createSigner("base", process.env.PAYER_KEY);
const payingFetch = wrapFetchWithPayment(fetch, signer);
const res = await payingFetch(url, { method: "GET" });
const header = res.headers.get("x-payment-response");
const out = {
  status: res.status,
  body: await res.text(),
  paymentResponse: header ? decodeXPaymentResponse(header) : null,
};
console.log(JSON.stringify(out));
process.exit(res.status === 200 ? 0 : 1);
