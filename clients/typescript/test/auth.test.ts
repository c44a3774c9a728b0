// Sessions against a real server: register, login, refresh on 401 (once), logout, and a
// validation error's details.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createKoryphaiosClient, KoryphaiosError, unwrap, type Session } from "../src/index.js";
import { ADMIN, startServer, type RunningServer } from "./harness.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
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

test("register, login and me: the first user is the admin", async () => {
  const kor = createKoryphaiosClient({ baseUrl: server.baseUrl });
  const registered = await unwrap(kor.POST("/api/auth/register", { body: ADMIN }));
  assert.equal(registered.user.username, "ada");
  assert.equal(registered.user.role, "admin");
  assert.equal(registered.user.tier, "enterprise");
  assert.match(registered.user.id, /^usr_[0-9a-f]{32}$/);

  const changes: (Session | undefined)[] = [];
  const session = createKoryphaiosClient({ baseUrl: server.baseUrl, onSessionChange: (s) => changes.push(s) });
  const login = await session.login(ADMIN);
  assert.equal(login.tokenType, "Bearer");
  assert.equal(login.expiresIn, 900);
  assert.match(login.refreshToken, /^krt_/);
  assert.deepEqual(session.session, { accessToken: login.accessToken, refreshToken: login.refreshToken });
  assert.equal(changes.length, 1);

  const me = await unwrap(session.GET("/api/auth/me"));
  assert.equal(me.userId, registered.user.id);
  assert.equal(me.username, "ada");
  assert.equal(me.role, "admin");
  assert.equal(me.authMethod, "session");
});

test("a 401 refreshes the session once and retries; the new pair is reported", async () => {
  const fresh = await createKoryphaiosClient({ baseUrl: server.baseUrl }).login(ADMIN);
  const changes: (Session | undefined)[] = [];
  const calls: string[] = [];
  const kor = createKoryphaiosClient({
    baseUrl: server.baseUrl,
    // An access token the server refuses (as an expired one would be), a good refresh token.
    session: { accessToken: "eyJhbGciOiJIUzI1NiJ9.e30.not-a-valid-signature", refreshToken: fresh.refreshToken },
    onSessionChange: (s) => changes.push(s),
    fetch: (request, init) => {
      calls.push(`${request.method} ${new URL(request.url).pathname}`);
      return fetch(request, init);
    },
  });
  const me = await unwrap(kor.GET("/api/auth/me"));
  assert.equal(me.username, "ada");
  assert.deepEqual(calls, ["GET /api/auth/me", "POST /api/auth/refresh", "GET /api/auth/me"]);
  assert.equal(changes.length, 1);
  const renewed = changes[0];
  assert.ok(renewed);
  assert.notEqual(renewed.refreshToken, fresh.refreshToken, "refresh tokens are single-use: a new one");
  assert.match(renewed.refreshToken, /^krt_/);
  assert.deepEqual(kor.session, renewed);

  // The spent refresh token is refused, and presenting it revokes the session family.
  const reuse = await rejection(
    unwrap(kor.POST("/api/auth/refresh", { body: { refreshToken: fresh.refreshToken } })),
  );
  assert.equal(reuse.status, 401);
  assert.equal(reuse.code, "refresh_token_reused");
  assert.ok(reuse.requestId);
});

test("a refused refresh token ends the session without a loop", async () => {
  const changes: (Session | undefined)[] = [];
  const calls: string[] = [];
  const kor = createKoryphaiosClient({
    baseUrl: server.baseUrl,
    session: { accessToken: "eyJhbGciOiJIUzI1NiJ9.e30.bad", refreshToken: "krt_not-a-real-refresh-token" },
    onSessionChange: (s) => changes.push(s),
    fetch: (request, init) => {
      calls.push(`${request.method} ${new URL(request.url).pathname}`);
      return fetch(request, init);
    },
  });
  const error = await rejection(unwrap(kor.GET("/api/auth/me")));
  assert.equal(error.status, 401);
  assert.deepEqual(calls, ["GET /api/auth/me", "POST /api/auth/refresh"]);
  assert.deepEqual(changes, [undefined]);
  assert.equal(kor.session, undefined);
});

test("logout ends the session on the server", async () => {
  const kor = createKoryphaiosClient({ baseUrl: server.baseUrl });
  const login = await kor.login(ADMIN);
  await kor.logout();
  assert.equal(kor.session, undefined);
  const stale = createKoryphaiosClient({ baseUrl: server.baseUrl });
  const { error, response } = await stale.GET("/api/auth/me", {
    headers: { authorization: `Bearer ${login.accessToken}` },
  });
  assert.equal(response.status, 401);
  assert.equal(error?.code, "token_revoked");
});

test("a validation error carries code, details and the request id", async () => {
  const kor = createKoryphaiosClient({ baseUrl: server.baseUrl });
  const { data, error, response } = await kor.POST("/api/auth/register", {
    body: { username: "x", password: "short" },
  });
  assert.equal(data, undefined);
  assert.equal(response.status, 400);
  assert.equal(error?.code, "validation_failed");
  const thrown = KoryphaiosError.fromResponse(response, error);
  assert.equal(thrown.status, 400);
  assert.equal(thrown.code, "validation_failed");
  assert.equal(thrown.requestId, response.headers.get("x-request-id"));
  const fields = thrown.details.map((d) => d.field).sort();
  assert.deepEqual(fields, ["password", "username"]);
  for (const detail of thrown.details) assert.ok(detail.message.length > 0);
  assert.match(thrown.message, /^400 validation_failed: /);
});
