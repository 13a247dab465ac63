// Benchmark support: pre-generates N PAYMENT-SIGNATURE headers for a Solana-priced URL exactly the way
// @x402/fetch builds them with the official @x402/svm client (each with its own random memo, so each
// is a distinct transaction): GET URL -> 402 -> createPaymentPayload -> encodePaymentSignatureHeader.
// usage: PAYER_SECRET=<base58 seed> SOLANA_RPC=http://127.0.0.1:N node sol-pregen.mjs N OUTFILE URL
import { writeFileSync } from "node:fs";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { createKeyPairSignerFromPrivateKeyBytes, getBase58Encoder } from "@solana/kit";

const [nText, out, url] = process.argv.slice(2);
const N = Number(nText ?? 300);
const signer = await createKeyPairSignerFromPrivateKeyBytes(new Uint8Array(getBase58Encoder().encode(process.env.PAYER_SECRET)));
const http = new x402HTTPClient(new x402Client().register("solana:*", new ExactSvmScheme(signer, { rpcUrl: process.env.SOLANA_RPC })));
const r = await fetch(url);
if (r.status !== 402) throw new Error(`expected 402, got ${r.status}`);
const text = await r.text();
let body; try { body = JSON.parse(text); } catch { body = undefined; }
const paymentRequired = http.getPaymentRequiredResponse((n) => r.headers.get(n), body);
const headers = [];
for (let i = 0; i < N; i++) headers.push(http.encodePaymentSignatureHeader(await http.createPaymentPayload(paymentRequired)));
if (new Set(headers.map((h) => Object.values(h)[0])).size !== N) throw new Error("duplicate payments");
writeFileSync(out, JSON.stringify(headers));
console.log(JSON.stringify({ n: N, payer: signer.address }));
