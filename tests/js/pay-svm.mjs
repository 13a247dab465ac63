// Pays for one request through tollgate with the official v2 Solana client (@x402/fetch + @x402/svm),
// its RPC pointed at the LiteSVM test-support server.
// usage: PAYER_SECRET=<base58 32-byte seed> SOLANA_RPC=http://127.0.0.1:N node pay-svm.mjs URL
//   → prints one JSON line {status, body, paymentResponse}
import { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { createKeyPairSignerFromPrivateKeyBytes, getBase58Encoder } from "@solana/kit";

const url = process.argv[2];
const seed = getBase58Encoder().encode(process.env.PAYER_SECRET);
const signer = await createKeyPairSignerFromPrivateKeyBytes(new Uint8Array(seed));
const client = new x402Client().register("solana:*", new ExactSvmScheme(signer, { rpcUrl: process.env.SOLANA_RPC }));
const payingFetch = wrapFetchWithPayment(fetch, client);
const res = await payingFetch(url, { method: "GET" });
const header = res.headers.get("payment-response");
const out = {
  status: res.status,
  body: await res.text(),
  paymentResponse: header ? decodePaymentResponseHeader(header) : null,
  payer: signer.address,
};
console.log(JSON.stringify(out));
process.exit(res.status === 200 ? 0 : 1);
