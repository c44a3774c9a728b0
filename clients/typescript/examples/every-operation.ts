// Every operation of docs/openapi.yaml, called through the typed client. `npm run typecheck`
// compiles this file (so a changed request or response shape fails it) and
// test/examples-coverage.test.ts checks that each path and method of the document appears here
// (so a new route fails until an example calls it). test/examples-run.test.ts runs it against a
// real server.
import {
  createKoryphaiosClient,
  proxyConfig,
  unwrap,
  KoryphaiosError,
  type KoryphaiosClient,
} from "../src/index.js";

export async function everyOperation(
  baseUrl: string,
  show: (...values: unknown[]) => void = console.log,
): Promise<void> {
  // --- auth: a session (the client refreshes the access token once on a 401) ---
  const kor: KoryphaiosClient = createKoryphaiosClient({
    baseUrl,
    onSessionChange: (session) => {
      // Persist session?.refreshToken somewhere safe; never log it.
      void session;
    },
  });
  const credentials = { username: "ada", password: "correct horse battery staple" };
  const registered = await unwrap(kor.POST("/api/auth/register", { body: credentials }));
  show(registered.user.id, registered.user.role);
  await unwrap(kor.POST("/api/auth/login", { body: credentials }));
  await kor.login(credentials); // the same, and the client keeps the session
  const me = await unwrap(kor.GET("/api/auth/me"));
  show(me.userId, me.authMethod, me.scopes);
  const pair = await unwrap(
    kor.POST("/api/auth/refresh", { body: { refreshToken: kor.session?.refreshToken ?? "" } }),
  );
  kor.setSession({ accessToken: pair.accessToken, refreshToken: pair.refreshToken });
  const changed = await unwrap(
    kor.POST("/api/auth/password", {
      body: { currentPassword: credentials.password, newPassword: "another long passphrase 2026" },
    }),
  );
  kor.setSession(changed);

  // --- credentials ---
  const credential = await unwrap(
    kor.POST("/api/v1/credentials", {
      body: { provider: "openai", credential: "sk-live-…", metadata: { team: "research" } },
    }),
  );
  const id = credential.id;
  const page = await unwrap(
    kor.GET("/api/v1/credentials", { params: { query: { provider: "openai", limit: 50 } } }),
  );
  show(page.credentials.length, page.nextCursor);
  await unwrap(kor.GET("/api/v1/credentials/{id}", { params: { path: { id } } }));
  await unwrap(
    kor.PATCH("/api/v1/credentials/{id}", {
      params: { path: { id } },
      body: { metadata: { team: "platform" } },
    }),
  );
  const revealed = await unwrap(
    kor.POST("/api/v1/credentials/{id}/reveal", {
      params: { path: { id } },
      body: { reason: "incident 42" },
    }),
  );
  show(revealed.version); // revealed.credential is the secret: never log it
  const rotated = await unwrap(
    kor.POST("/api/v1/credentials/{id}/rotate", {
      params: { path: { id } },
      body: { credential: "sk-live-new", reason: "scheduled" },
    }),
  );
  show(rotated.version);
  const trail = await unwrap(kor.GET("/api/v1/credentials/{id}/audit", { params: { path: { id } } }));
  show(trail);

  // --- API keys ---
  const issued = await unwrap(
    kor.POST("/api/v1/keys", {
      body: {
        name: "ci deploy",
        scopes: ["read", "provider:openai", "proxy:openai"],
        expiresInDays: 90,
        rateLimit: { perMinute: 120 },
      },
    }),
  );
  const keyId = issued.id;
  const keys = await unwrap(kor.GET("/api/v1/keys", { params: { query: { limit: 10 } } }));
  show(keys.keys.map((k) => k.status));
  await unwrap(kor.GET("/api/v1/keys/{id}", { params: { path: { id: keyId } } }));
  await unwrap(
    kor.PATCH("/api/v1/keys/{id}", { params: { path: { id: keyId } }, body: { name: "ci deploy 2" } }),
  );
  const verdict = await unwrap(kor.POST("/api/v1/keys/verify", { body: { key: issued.key } }));
  show(verdict.valid, verdict.code, verdict.ratelimit?.remaining);
  const rolled = await unwrap(
    kor.POST("/api/v1/keys/{id}/roll", {
      params: { path: { id: keyId } },
      body: { gracePeriodSeconds: 60 },
    }),
  );

  // --- agent tokens (minted by the key) ---
  const byKey = createKoryphaiosClient({ baseUrl, apiKey: rolled.key, retry: { retries: 2 } });
  const token = await unwrap(
    byKey.POST("/api/v1/tokens", {
      body: { ttlSeconds: 600, scopes: ["proxy:openai"], runId: "run-7", credentialIds: [id] },
    }),
  );
  const tokens = await unwrap(byKey.GET("/api/v1/tokens"));
  show(tokens);
  const agent = createKoryphaiosClient({ baseUrl, apiKey: token.token });

  // --- the credential proxy, every method ---
  const target = { params: { path: { provider: "openai", path: "chat/completions" } } };
  await agent.POST("/api/v1/proxy/{provider}/{path}", target);
  await agent.GET("/api/v1/proxy/{provider}/{path}", {
    params: {
      path: { provider: "openai", path: "models" },
      header: { "X-Koryphaios-Credential": id },
    },
  });
  await agent.PUT("/api/v1/proxy/{provider}/{path}", target);
  await agent.PATCH("/api/v1/proxy/{provider}/{path}", target);
  await agent.DELETE("/api/v1/proxy/{provider}/{path}", target);
  // Or hand a provider SDK the pair: new OpenAI(proxyConfig(baseUrl, "openai", token.token)).
  show(proxyConfig(baseUrl, "openai", token.token).baseURL);
  await unwrap(byKey.DELETE("/api/v1/tokens/{id}", { params: { path: { id: token.id } } }));

  // --- audit ---
  const audit = await unwrap(
    kor.GET("/api/v1/audit", { params: { query: { action: "credential_access", limit: 20 } } }),
  );
  show(audit);
  await unwrap(kor.GET("/api/v1/audit/me", { params: { query: { limit: 20 } } }));
  await unwrap(kor.GET("/api/v1/audit/suspicious", { params: { query: { windowHours: 24 } } }));
  const chain = await unwrap(kor.GET("/api/v1/audit/verify"));
  show(chain);
  const exported: string = await unwrap(
    kor.GET("/api/v1/audit/export", { params: { query: { format: "jsonl" } }, parseAs: "text" }),
  );
  show(exported.split("\n").length);

  // --- users (admins) ---
  const users = await unwrap(kor.GET("/api/v1/users", { params: { query: { limit: 100 } } }));
  const userId = me.userId;
  await unwrap(kor.GET("/api/v1/users/{id}", { params: { path: { id: userId } } }));
  await unwrap(
    kor.PATCH("/api/v1/users/{id}", { params: { path: { id: userId } }, body: { tier: "pro" } }),
  );
  show(users);

  // --- clean-up ---
  await unwrap(kor.DELETE("/api/v1/keys/{id}", { params: { path: { id: keyId } } }));
  await unwrap(
    kor.DELETE("/api/v1/credentials/{id}", { params: { path: { id } }, body: { reason: "retired" } }),
  );
  await unwrap(kor.POST("/api/auth/logout")); // this session
  await kor.login({ username: credentials.username, password: "another long passphrase 2026" });
  await unwrap(kor.POST("/api/auth/logout-all")); // every session of the user

  // --- health and metrics (no credentials) ---
  const anon = createKoryphaiosClient({ baseUrl });
  const live = await unwrap(anon.GET("/health"));
  show(live.data.version);
  const ready = await unwrap(anon.GET("/health/ready"));
  show(ready.data.status);
  const metrics: string = await unwrap(anon.GET("/metrics", { parseAs: "text" }));
  show(metrics.length);

  // --- errors: typed, with the envelope's code and request id ---
  try {
    await unwrap(anon.GET("/api/v1/keys"));
  } catch (e) {
    if (!(e instanceof KoryphaiosError)) throw e;
    show(e.status, e.code, e.requestId, e.details, e.retryAfter);
  }
}
