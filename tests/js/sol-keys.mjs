// Benchmark support: a deterministic Solana keypair from one repeated byte.
// usage: node sol-keys.mjs BYTE  -> {"address", "seed58" (32-byte seed), "keypair58" (64 bytes, what tollgate reads)}
import { createKeyPairSignerFromPrivateKeyBytes, getAddressEncoder, getBase58Decoder } from "@solana/kit";

const seed = new Uint8Array(32).fill(Number(process.argv[2] ?? 1));
const signer = await createKeyPairSignerFromPrivateKeyBytes(seed);
const pub = getAddressEncoder().encode(signer.address);
const b58 = getBase58Decoder();
console.log(JSON.stringify({ address: signer.address, seed58: b58.decode(seed), keypair58: b58.decode(new Uint8Array([...seed, ...pub])) }));
