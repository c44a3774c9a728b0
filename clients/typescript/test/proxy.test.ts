// The credential proxy through proxyConfig(), used the way the OpenAI SDK (Authorization: Bearer)
// and the Anthropic SDK (x-api-key) call it, against a stand-in provider that records what it got.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createKoryphaiosClient, proxyConfig, unwrap, type KoryphaiosClient } from "../src/index.js";
import { adminClient, startServer, startStubProvider, type RunningServer, type StubProvider } from "./harness.js";

let stub: StubProvider;
let server: RunningServer;
let admin: KoryphaiosClient;
let apiKey: string;
let openaiCredentialId: string;
before(async () => {
  stub = await startStubProvider();
  server = await startServer({
    KORYPHAIOS_PROVIDER_OPENAI_BASE_URL: `${stub.url}/openai`,
    KORYPHAIOS_PROVIDER_ANTHROPIC_BASE_URL: `${stub.url}/anthropic`,
  });
  admin = await adminClient(server.baseUrl);
  const openai = await unwrap(
    admin.POST("/api/v1/credentials", { body: { provider: "openai", credential: "sk-openai-stored" } }),
  );
  openaiCredentialId = openai.id;
  await unwrap(
    admin.POST("/api/v1/credentials", { body: { provider: "anthropic", credential: "sk-ant-stored" } }),
  );
  const key = await unwrap(
    admin.POST("/api/v1/keys", { body: { name: "agents", scopes: ["proxy:openai", "proxy:anthropic"] } }),
  );
  apiKey = key.key;
});
after(async () => {
  await server?.stop();
  await stub?.stop();
});

test("proxyConfig: the OpenAI SDK's request reaches the provider with the stored key", async () => {
  const config = proxyConfig(`${server.baseUrl}/`, "openai", apiKey);
  assert.deepEqual(config, { baseURL: `${server.baseUrl}/api/v1/proxy/openai`, apiKey });
  const before = stub.seen.length;
  // What `new OpenAI(config).chat.completions.create(…)` sends.
  const response = await fetch(`${config.baseURL}/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${config.apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { stub: true, path: "/openai/chat/completions" });
  const seen = stub.seen.slice(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.method, "POST");
  assert.equal(seen[0]?.headers.authorization, "Bearer sk-openai-stored");
  assert.ok(!JSON.stringify(seen[0]?.headers).includes(apiKey), "the Koryphaios key is not forwarded");
  assert.equal(JSON.parse(seen[0]?.body ?? "{}").model, "gpt-4o-mini");
});

test("proxyConfig: the Anthropic SDK's x-api-key authenticates to Koryphaios", async () => {
  const config = proxyConfig(server.baseUrl, "anthropic", apiKey);
  const before = stub.seen.length;
  const response = await fetch(`${config.baseURL}/v1/messages`, {
    method: "POST",
    headers: { "x-api-key": config.apiKey, "anthropic-version": "2023-06-01", "content-type": "application/json" },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [{ role: "user", content: "hi" }] }),
  });
  assert.equal(response.status, 200);
  const seen = stub.seen.slice(before);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]?.url, "/anthropic/v1/messages");
  assert.equal(seen[0]?.headers["x-api-key"], "sk-ant-stored");
  assert.equal(seen[0]?.headers["anthropic-version"], "2023-06-01");
});

test("the typed proxy operation keeps the path's slashes; an agent token works too", async () => {
  const token = await unwrap(
    createKoryphaiosClient({ baseUrl: server.baseUrl, apiKey }).POST("/api/v1/tokens", {
      body: { ttlSeconds: 60, scopes: ["proxy:openai"], runId: "ts-client-run", credentialIds: [openaiCredentialId] },
    }),
  );
  assert.match(token.token, /^kat_/);
  const agent = createKoryphaiosClient({ baseUrl: server.baseUrl, apiKey: token.token });
  const before = stub.seen.length;
  const { response, error } = await agent.GET("/api/v1/proxy/{provider}/{path}", {
    params: { path: { provider: "openai", path: "v1/models" } },
  });
  assert.equal(response.status, 200, `${response.url}: ${JSON.stringify(error)}`);
  assert.equal(stub.seen.slice(before)[0]?.url, "/openai/v1/models");
  assert.equal(stub.seen.slice(before)[0]?.headers.authorization, "Bearer sk-openai-stored");

  const audit = await unwrap(admin.GET("/api/v1/audit", { params: { query: { runId: "ts-client-run" } } }));
  assert.ok(audit.records.some((r) => r.action === "credential_use" && r.resourceId === openaiCredentialId));
});
