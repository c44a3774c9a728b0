// Starts a real `koryphaios serve` for a test file (as scripts/schemathesis.sh does: a free port,
// a fresh data directory, none of the caller's KORYPHAIOS_* variables) and a stand-in provider the
// credential proxy calls instead of the internet.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createKoryphaiosClient, type KoryphaiosClient } from "../src/index.js";

/** clients/typescript (this file runs from dist/test/). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export interface RunningServer {
  baseUrl: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

/** `koryphaios serve` from KORYPHAIOS_BIN (default ../../target/debug/koryphaios). */
export async function startServer(env: Record<string, string> = {}): Promise<RunningServer> {
  const bin = resolve(process.env.KORYPHAIOS_BIN ?? join(packageRoot, "..", "..", "target", "debug", "koryphaios"));
  const dataDir = mkdtempSync(join(tmpdir(), "kor-ts-client-"));
  const port = await freePort();
  const childEnv: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith("KORYPHAIOS_")) childEnv[name] = value;
  }
  Object.assign(childEnv, {
    KORYPHAIOS_DATA_DIR: join(dataDir, "data"),
    KORYPHAIOS_HOST: "127.0.0.1",
    KORYPHAIOS_PORT: String(port),
    KORYPHAIOS_ALLOW_REGISTRATION: "true",
    KORYPHAIOS_LOG_LEVEL: "warn",
    // The tests log in and refresh often; the limits under test are the keys' own.
    KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE: "1000",
    ...env,
  });
  const child: ChildProcess = spawn(bin, ["serve"], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString("utf8")).slice(-8000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  let exited = false;
  // Never outlive the test process, even when it ends without running `after`.
  const orphanGuard = (): void => {
    child.kill("SIGKILL");
  };
  process.once("exit", orphanGuard);
  child.on("exit", () => {
    exited = true;
    process.off("exit", orphanGuard);
  });
  child.on("error", (error) => {
    output += `\nspawn ${bin}: ${error.message}`;
    exited = true;
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (!exited) {
      const gone = once(child, "exit");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(timer);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`koryphaios serve (${bin}) exited before answering /health:\n${output}`);
    }
    try {
      const response = await fetch(`${baseUrl}/health`);
      if (response.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`koryphaios serve did not answer /health within 15 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { baseUrl, stop };
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface StubProvider {
  /** `http://127.0.0.1:<port>`: a provider's base URL is this plus `/<provider>`. */
  url: string;
  seen: SeenRequest[];
  stop(): Promise<void>;
}

/** Answers every request 200 `{"stub":true,"path":…}` and remembers what it was sent. */
export async function startStubProvider(): Promise<StubProvider> {
  const seen: SeenRequest[] = [];
  const server: HttpServer = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      seen.push({
        method: request.method ?? "",
        url: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      const body = JSON.stringify({ stub: true, path: request.url });
      response.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      response.end(body);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    stop: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

export const ADMIN = { username: "ada", password: "correct horse battery staple" };

/** Registers the first user (the admin) and returns a client logged in as them. */
export async function adminClient(baseUrl: string): Promise<KoryphaiosClient> {
  const client = createKoryphaiosClient({ baseUrl });
  const { response } = await client.POST("/api/auth/register", { body: ADMIN });
  if (response.status !== 201) throw new Error(`register the admin: ${response.status}`);
  await client.login(ADMIN);
  return client;
}
