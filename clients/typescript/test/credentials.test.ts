// Credentials and the audit log against a real server: create, reveal, rotate, list, the
// credential's trail, an audit query and the chain check.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { unwrap, type KoryphaiosClient } from "../src/index.js";
import { adminClient, startServer, type RunningServer } from "./harness.js";

let server: RunningServer;
let admin: KoryphaiosClient;
before(async () => {
  server = await startServer();
  admin = await adminClient(server.baseUrl);
});
after(async () => {
  await server?.stop();
});

test("credentials: create, reveal, rotate; audit: the trail, a query, the chain", async () => {
  const created = await unwrap(
    admin.POST("/api/v1/credentials", {
      body: { provider: "openai", credential: "sk-test-first-value", metadata: { team: "research" } },
    }),
  );
  assert.match(created.id, /^cred_[0-9a-f]{32}$/);
  assert.equal(created.provider, "openai");
  assert.equal(created.type, "api_key");
  assert.equal(created.version, 1);
  assert.equal(created.active, true);
  assert.deepEqual(created.metadata, { team: "research" });
  assert.ok(!JSON.stringify(created).includes("sk-test-first-value"), "metadata never carries the secret");
  const path = { params: { path: { id: created.id } } };

  const revealed = await unwrap(
    admin.POST("/api/v1/credentials/{id}/reveal", { ...path, body: { reason: "ts client test" } }),
  );
  assert.deepEqual(revealed, { id: created.id, provider: "openai", credential: "sk-test-first-value", version: 1 });

  const rotated = await unwrap(
    admin.POST("/api/v1/credentials/{id}/rotate", {
      ...path,
      body: { credential: "sk-test-second-value", reason: "scheduled" },
    }),
  );
  assert.equal(rotated.id, created.id);
  assert.equal(rotated.version, 2);
  const again = await unwrap(admin.POST("/api/v1/credentials/{id}/reveal", path));
  assert.equal(again.credential, "sk-test-second-value");
  assert.equal(again.version, 2);

  const listed = await unwrap(admin.GET("/api/v1/credentials", { params: { query: { provider: "openai" } } }));
  assert.deepEqual(
    listed.credentials.map((c) => [c.id, c.version]),
    [[created.id, 2]],
  );

  const trail = await unwrap(admin.GET("/api/v1/credentials/{id}/audit", path));
  const actions = trail.records.map((r) => r.action);
  assert.deepEqual(actions, ["credential_access", "credential_rotate", "credential_access", "credential_create"]);
  assert.equal(trail.records[2]?.reason, "ts client test");
  assert.ok(trail.records.every((r) => r.success && r.resourceId === created.id));

  const query = await unwrap(
    admin.GET("/api/v1/audit", { params: { query: { action: "credential_access", resourceId: created.id } } }),
  );
  assert.equal(query.records.length, 2);
  assert.ok(query.records.every((r) => r.action === "credential_access" && r.requestId));

  const chain = await unwrap(admin.GET("/api/v1/audit/verify"));
  assert.equal(chain.valid, true);
  assert.ok(chain.checked >= 6, `checked ${chain.checked}`);

  const exported = await unwrap(
    admin.GET("/api/v1/audit/export", {
      params: { query: { format: "jsonl", action: "credential_rotate" } },
      parseAs: "text",
    }),
  );
  const lines = exported.trim().split("\n").map((line) => JSON.parse(line) as { action: string });
  assert.deepEqual(lines.map((l) => l.action), ["credential_rotate"]);
});
