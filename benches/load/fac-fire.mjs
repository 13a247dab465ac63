// Fires pre-generated facilitator bodies at POST {URL}/settle (or /verify) with bounded concurrency, as a stock
// resource server would (keep-alive, a bearer key if given); measures completed settlements (success:true) or
// valid verifications per second, p50/p99.
// usage: node fac-fire.mjs BODIES.json BASE_URL settle|verify CONCURRENCY LABEL [KEY] [REPEAT]
//   REPEAT (verify only): send each body REPEAT times (verification changes nothing).
//   DEADLINE_S (env, 300): after it, nothing more is sent and what is outstanding is abandoned and counted
//   failed (a facilitator that waits for a receipt with no deadline must not hang the harness).
import { readFileSync } from "node:fs";
import http from "node:http";

const [file, base, what, concText, label, key, repeatText] = process.argv.slice(2);
const conc = Number(concText), repeat = Number(repeatText ?? 1);
const bodies = JSON.parse(readFileSync(file, "utf8")).map((b) => JSON.stringify(b));
const work = []; for (let r = 0; r < repeat; r++) work.push(...bodies);
const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
const url = new URL(`${base}/${what}`);
function post(body) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const headers = { "content-type": "application/json", "content-length": Buffer.byteLength(body) };
    if (key) headers.authorization = `Bearer ${key}`;
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent, headers, timeout: 120000 }, (res) => {
      let b = ""; res.on("data", (d) => (b += d)); res.on("end", () => {
        let ok = false; try { const v = JSON.parse(b); ok = what === "settle" ? v.success === true : v.isValid === true; } catch {}
        resolve({ ms: performance.now() - t0, status: res.statusCode, ok, body: b.slice(0, 200) });
      });
    });
    req.on("error", (e) => resolve({ ms: performance.now() - t0, status: 0, ok: false, body: String(e) }));
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end(body);
  });
}
let next = 0, stop = false; const results = [];
const T0 = performance.now();
const deadline = setTimeout(() => { stop = true; agent.destroy(); }, Number(process.env.DEADLINE_S ?? 300) * 1000);
await Promise.all(Array.from({ length: conc }, async () => { while (!stop && next < work.length) results.push(await post(work[next++])); }));
clearTimeout(deadline);
const wall = (performance.now() - T0) / 1000;
agent.destroy();
for (let i = results.length; i < work.length; i++) results.push({ ms: NaN, status: 0, ok: false, body: "not sent: deadline" });
const ok = results.filter((r) => r.status === 200 && r.ok);
const lat = ok.map((r) => r.ms).sort((a, b) => a - b);
const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.ceil(p * lat.length) - 1)] : NaN;
const byStatus = {}; for (const r of results) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
const sample = results.find((r) => !(r.status === 200 && r.ok));
console.log(JSON.stringify({ label, what, n: work.length, conc, wall_s: +wall.toFixed(3), ok: ok.length, ok_rps: +(ok.length / wall).toFixed(1),
  p50_ms: +q(0.5).toFixed(1), p99_ms: +q(0.99).toFixed(1), max_ms: +(lat.at(-1) ?? NaN).toFixed(1), by_status: byStatus, failure_sample: sample?.body }));
