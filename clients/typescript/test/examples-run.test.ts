// examples/every-operation.ts, run against a real server (with a stand-in provider for the proxy):
// every operation of the document answers as the example expects (unwrap() throws otherwise).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { everyOperation } from "../examples/every-operation.js";
import { startServer, startStubProvider, type RunningServer, type StubProvider } from "./harness.js";

let stub: StubProvider;
let server: RunningServer;
before(async () => {
  stub = await startStubProvider();
  server = await startServer({ KORYPHAIOS_PROVIDER_OPENAI_BASE_URL: `${stub.url}/openai` });
});
after(async () => {
  await server?.stop();
  await stub?.stop();
});

test("examples/every-operation.ts runs against a real server", async () => {
  const shown: unknown[][] = [];
  await everyOperation(server.baseUrl, (...values) => shown.push(values));
  // The five proxy calls reached the provider with the stored credential.
  assert.deepEqual(
    stub.seen.map((s) => `${s.method} ${s.url} ${s.headers.authorization}`),
    [
      "POST /openai/chat/completions Bearer sk-live-new",
      "GET /openai/models Bearer sk-live-new",
      "PUT /openai/chat/completions Bearer sk-live-new",
      "PATCH /openai/chat/completions Bearer sk-live-new",
      "DELETE /openai/chat/completions Bearer sk-live-new",
    ],
  );
  // The last call is the typed error of an unauthenticated request.
  assert.deepEqual(shown.at(-1)?.slice(0, 2), [401, "unauthenticated"]);
});
