// The hand-written layer without a server: refresh-once, shared refreshes, capped 429 retries,
// Retry-After parsing and error building, over a scripted fetch.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createKoryphaiosClient, KoryphaiosError, parseRetryAfter, proxyConfig, unwrap } from "../src/index.js";

type Handler = (request: Request) => Response | Promise<Response>;

function scripted(handler: Handler): { fetch: (r: Request) => Promise<Response>; log: string[] } {
  const log: string[] = [];
  return {
    log,
    fetch: async (request) => {
      const auth = request.headers.get("authorization") ?? request.headers.get("x-api-key") ?? "-";
      log.push(`${request.method} ${new URL(request.url).pathname} ${auth}`);
      return handler(request);
    },
  };
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
const unauthenticated = (): Response =>
  json(401, { error: "Unauthorized", code: "token_expired", requestId: "req-401" });
const pair = (n: number): Response =>
  json(200, { accessToken: `access-${n}`, refreshToken: `refresh-${n}`, tokenType: "Bearer", expiresIn: 900 });

test("a 401 after a successful refresh is returned, not refreshed again", async () => {
  const { fetch, log } = scripted((request) =>
    new URL(request.url).pathname === "/api/auth/refresh" ? pair(1) : unauthenticated(),
  );
  const kor = createKoryphaiosClient({
    baseUrl: "http://kor.test",
    session: { accessToken: "access-0", refreshToken: "refresh-0" },
    fetch,
  });
  const { response, error } = await kor.GET("/api/auth/me");
  assert.equal(response.status, 401);
  assert.equal(error?.code, "token_expired");
  assert.deepEqual(log, [
    "GET /api/auth/me Bearer access-0",
    "POST /api/auth/refresh -",
    "GET /api/auth/me Bearer access-1",
  ]);
});

test("concurrent 401s share one refresh (a refresh token works once)", async () => {
  let refreshes = 0;
  const { fetch, log } = scripted(async (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/api/auth/refresh") {
      refreshes += 1;
      assert.deepEqual(await request.json(), { refreshToken: "refresh-0" });
      await new Promise((r) => setTimeout(r, 20));
      return pair(refreshes);
    }
    return request.headers.get("authorization") === "Bearer access-1" ? json(200, { ok: true }) : unauthenticated();
  });
  const kor = createKoryphaiosClient({
    baseUrl: "http://kor.test",
    session: { accessToken: "access-0", refreshToken: "refresh-0" },
    fetch,
  });
  const results = await Promise.all([1, 2, 3].map(() => kor.GET("/api/auth/me")));
  assert.deepEqual(results.map((r) => r.response.status), [200, 200, 200]);
  assert.equal(refreshes, 1);
  assert.equal(log.filter((l) => l.startsWith("POST /api/auth/refresh")).length, 1);
  assert.deepEqual(kor.session, { accessToken: "access-1", refreshToken: "refresh-1" });
});

test("an API key is sent as X-API-Key and a 401 with it never refreshes", async () => {
  const { fetch, log } = scripted(() => unauthenticated());
  const kor = createKoryphaiosClient({ baseUrl: "http://kor.test", apiKey: "kor_example", fetch });
  const error = await unwrap(kor.GET("/api/v1/keys")).catch((e: unknown) => e);
  assert.ok(error instanceof KoryphaiosError);
  assert.equal(error.code, "token_expired");
  assert.equal(error.requestId, "req-401");
  assert.deepEqual(log, ["GET /api/v1/keys kor_example"]);
});

test("429: retried after Retry-After up to the cap, with the body each time", async () => {
  let calls = 0;
  const { fetch } = scripted(async (request) => {
    calls += 1;
    assert.deepEqual(await request.json(), { key: "kor_x" }, "each attempt sends the body");
    return json(429, { error: "Too Many Requests", code: "rate_limited", retryAfter: 0, requestId: `r${calls}` }, {
      "retry-after": "0",
    });
  });
  const kor = createKoryphaiosClient({ baseUrl: "http://kor.test", apiKey: "kor_a", retry: { retries: 2 }, fetch });
  const error = await unwrap(kor.POST("/api/v1/keys/verify", { body: { key: "kor_x" } })).catch((e: unknown) => e);
  assert.equal(calls, 3, "one call and two retries");
  assert.ok(error instanceof KoryphaiosError);
  assert.equal(error.status, 429);
  assert.equal(error.retryAfter, 0);
  assert.equal(error.requestId, "r3");

  let second = 0;
  const recovering = scripted(() => {
    second += 1;
    return second === 1 ? json(429, { error: "x", code: "rate_limited", requestId: "r" }, { "retry-after": "0" }) : json(200, { valid: true, code: "VALID" });
  });
  const retrying = createKoryphaiosClient({ baseUrl: "http://kor.test", retry: { retries: 1 }, fetch: recovering.fetch });
  const verdict = await unwrap(retrying.POST("/api/v1/keys/verify", { body: { key: "kor_x" } }));
  assert.equal(verdict.code, "VALID");
  assert.equal(second, 2);

  // Without retry options a 429 is returned at once.
  let once = 0;
  const plain = createKoryphaiosClient({
    baseUrl: "http://kor.test",
    fetch: async () => {
      once += 1;
      return json(429, { error: "x", code: "rate_limited", requestId: "r" }, { "retry-after": "0" });
    },
  });
  assert.equal((await plain.GET("/api/auth/me")).response.status, 429);
  assert.equal(once, 1);
  assert.throws(() => createKoryphaiosClient({ baseUrl: "http://kor.test", retry: { retries: 11 } }), RangeError);
});

test("Retry-After as seconds or an HTTP date; errors from bodies that are not the envelope", () => {
  assert.equal(parseRetryAfter("7"), 7);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now), 30);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 00:00:00 GMT", now), 0);

  const response = new Response("upstream down", {
    status: 502,
    statusText: "Bad Gateway",
    headers: { "x-request-id": "req-502", "retry-after": "3" },
  });
  const error = KoryphaiosError.fromResponse(response, "upstream down");
  assert.equal(error.code, "http_502");
  assert.equal(error.requestId, "req-502");
  assert.equal(error.retryAfter, 3);
  assert.deepEqual(error.details, []);
  assert.equal(error.name, "KoryphaiosError");
});

test("proxyConfig and the proxy path keep slashes, encode the rest", async () => {
  assert.deepEqual(proxyConfig("https://kor.example.com///", "anthropic", "kor_k"), {
    baseURL: "https://kor.example.com/api/v1/proxy/anthropic",
    apiKey: "kor_k",
  });
  const { fetch, log } = scripted(() => json(200, {}));
  const kor = createKoryphaiosClient({ baseUrl: "http://kor.test/", apiKey: "kor_k", fetch });
  await kor.POST("/api/v1/proxy/{provider}/{path}", {
    params: { path: { provider: "openai", path: "v1/chat completions" } },
  });
  assert.deepEqual(log, ["POST /api/v1/proxy/openai/v1/chat%20completions kor_k"]);
});
