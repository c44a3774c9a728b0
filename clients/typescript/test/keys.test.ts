// API keys against a real server: create, verify, authenticate, roll, revoke, and a key's own
// rate limit answering 429 with Retry-After.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createKoryphaiosClient, KoryphaiosError, unwrap, type KoryphaiosClient } from "../src/index.js";
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

async function rejection(promise: Promise<unknown>): Promise<KoryphaiosError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof KoryphaiosError, `expected a KoryphaiosError, got ${String(error)}`);
    return error;
  }
  assert.fail("expected the call to fail");
}

test("keys: create, verify, authenticate, roll, revoke", async () => {
  const me = await unwrap(admin.GET("/api/auth/me"));
  const issued = await unwrap(
    admin.POST("/api/v1/keys", {
      body: { name: "ci deploy", scopes: ["read", "provider:openai"], expiresInDays: 30 },
    }),
  );
  assert.match(issued.key, /^kor_[A-Za-z0-9]{49}$/);
  assert.equal(issued.name, "ci deploy");
  assert.deepEqual([...issued.scopes].sort(), ["provider:openai", "read"]);
  assert.ok(issued.key.startsWith(issued.prefix));

  const verdict = await unwrap(admin.POST("/api/v1/keys/verify", { body: { key: issued.key } }));
  assert.equal(verdict.valid, true);
  assert.equal(verdict.code, "VALID");
  assert.equal(verdict.keyId, issued.id);
  assert.equal(verdict.userId, me.userId);
  assert.deepEqual([...(verdict.scopes ?? [])].sort(), ["provider:openai", "read"]);

  const byKey = createKoryphaiosClient({ baseUrl: server.baseUrl, apiKey: issued.key });
  const asKey = await unwrap(byKey.GET("/api/auth/me"));
  assert.equal(asKey.userId, me.userId);
  assert.equal(asKey.keyId, issued.id);
  assert.equal(asKey.authMethod, "api_key");

  const listed = await unwrap(admin.GET("/api/v1/keys/{id}", { params: { path: { id: issued.id } } }));
  assert.equal(listed.status, "active");
  assert.equal(listed.name, "ci deploy");

  // Roll without grace: the new key works, the old one stops.
  const rolled = await unwrap(
    admin.POST("/api/v1/keys/{id}/roll", { params: { path: { id: issued.id } }, body: { gracePeriodSeconds: 0 } }),
  );
  assert.notEqual(rolled.key, issued.key);
  assert.match(rolled.key, /^kor_/);
  const old = await unwrap(admin.POST("/api/v1/keys/verify", { body: { key: issued.key } }));
  assert.equal(old.valid, false);
  assert.notEqual(old.code, "VALID");
  const rolledBy = createKoryphaiosClient({ baseUrl: server.baseUrl, apiKey: rolled.key });
  assert.equal((await unwrap(rolledBy.GET("/api/auth/me"))).userId, me.userId);

  // Revoke: the next request is refused with a typed error.
  const revoked = await unwrap(admin.DELETE("/api/v1/keys/{id}", { params: { path: { id: rolled.id } } }));
  assert.equal(revoked, undefined);
  const refused = await rejection(unwrap(rolledBy.GET("/api/auth/me")));
  assert.equal(refused.status, 401);
  assert.equal(refused.code, "api_key_revoked");
  assert.match(refused.requestId ?? "", /^[0-9a-f-]{36}$/);
  const after = await unwrap(admin.POST("/api/v1/keys/verify", { body: { key: rolled.key } }));
  assert.equal(after.valid, false);
  assert.equal(after.code, "REVOKED");
});

test("a key's own limit answers 429 with Retry-After; retries never wait past the cap", async () => {
  const issued = await unwrap(
    admin.POST("/api/v1/keys", { body: { name: "tight", scopes: ["read"], rateLimit: { perMinute: 2 } } }),
  );
  const calls: number[] = [];
  const byKey = createKoryphaiosClient({
    baseUrl: server.baseUrl,
    apiKey: issued.key,
    // Retries on, but never for longer than a second: a minute's limit is not waited out.
    retry: { retries: 3, maxDelaySeconds: 1 },
    fetch: async (request, init) => {
      const response = await fetch(request, init);
      calls.push(response.status);
      return response;
    },
  });
  await unwrap(byKey.GET("/api/auth/me"));
  await unwrap(byKey.GET("/api/auth/me"));
  const limited = await rejection(unwrap(byKey.GET("/api/auth/me")));
  assert.deepEqual(calls, [200, 200, 429], "a 429 asking for more than maxDelaySeconds is returned, not retried");
  assert.equal(limited.status, 429);
  assert.equal(limited.code, "rate_limited");
  assert.ok(limited.retryAfter !== undefined && limited.retryAfter >= 1 && limited.retryAfter <= 120, `retryAfter ${limited.retryAfter}`);
  assert.ok(limited.requestId);

  // The raw response: the header and the body agree.
  const raw = await byKey.GET("/api/auth/me");
  assert.equal(raw.response.status, 429);
  assert.equal(raw.error?.retryAfter, Number(raw.response.headers.get("retry-after")));
  assert.equal(raw.response.headers.get("x-ratelimit-remaining"), "0");
});
