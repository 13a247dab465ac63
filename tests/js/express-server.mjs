// A stock resource server: express + the official @x402/express paymentMiddleware, with tollgate as its
// facilitator and a tenant key in the facilitator client's auth headers (createAuthHeaders).
// usage: FACILITATOR_URL=http://…/facilitator TENANT_KEY=x402_live_… PAY_TO=0x… node express-server.mjs PORT
import express from "express";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { HTTPFacilitatorClient } from "@x402/core/server";

const port = Number(process.argv[2]);
const auth = { Authorization: `Bearer ${process.env.TENANT_KEY}` };
const facilitator = new HTTPFacilitatorClient({
  url: process.env.FACILITATOR_URL,
  createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: auth }),
});
const server = new x402ResourceServer(facilitator).register("eip155:8453", new ExactEvmScheme());

const app = express();
app.use(paymentMiddleware({
  "GET /weather": {
    accepts: { scheme: "exact", price: "$0.001", network: "eip155:8453", payTo: process.env.PAY_TO, maxTimeoutSeconds: 300 },
    description: "weather", mimeType: "application/json",
  },
}, server));
app.get("/weather", (_req, res) => res.json({ weather: "sunny" }));
app.listen(port, "127.0.0.1", () => console.log(`listening ${port}`));
