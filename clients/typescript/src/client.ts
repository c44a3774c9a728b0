import createClient, { defaultPathSerializer, type Client, type PathSerializer } from "openapi-fetch";
import { KoryphaiosError, parseRetryAfter } from "./errors.js";
import type { components, paths } from "./generated/schema.js";

type Schemas = components["schemas"];
/** `POST /api/auth/login` and `/register` body. */
export type CredentialsRequest = Schemas["CredentialsRequest"];
/** A session's tokens as login, refresh and password change return them. */
export type SessionResponse = Schemas["SessionResponse"];

/** The two tokens of a session: a short-lived access token and a single-use refresh token. */
export interface Session {
  accessToken: string;
  refreshToken: string;
}

/** Opt-in retries of requests refused with 429, after the `Retry-After` the server sends. */
export interface RetryOptions {
  /** How many times one request is retried after a 429 (0 to 10). */
  retries: number;
  /**
   * The longest wait accepted, in seconds (default 60): a 429 asking for longer is returned as it
   * is rather than waited out.
   */
  maxDelaySeconds?: number;
}

/** The `fetch` the client calls: the global one by default. */
export type FetchLike = (request: Request, init?: RequestInit) => Promise<Response>;

export interface KoryphaiosClientOptions {
  /** The server, e.g. `https://kor.example.com` (no `/api`). */
  baseUrl: string;
  /**
   * An API key (`kor_…`) or agent token (`kat_…`), sent as `X-API-Key` on every request. Takes
   * precedence over a session.
   */
  apiKey?: string;
  /** A session from an earlier login; {@link KoryphaiosClient.login} sets one too. */
  session?: Session;
  /**
   * Called whenever the session changes (login, a refresh after a 401, logout, or a refresh token
   * refused): persist the new tokens here. Each refresh token works once, so keep the latest.
   */
  onSessionChange?: (session: Session | undefined) => void;
  /** Retries after 429: off unless given. */
  retry?: RetryOptions;
  /** Headers sent on every request. */
  headers?: Record<string, string>;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: FetchLike;
}

/** The generated client (`GET`, `POST`, … on every path of the document) plus session helpers. */
export interface KoryphaiosClient extends Client<paths> {
  /** Logs in, and from then on authenticates with the session (refreshing it once on a 401). */
  login(credentials: CredentialsRequest): Promise<SessionResponse>;
  /** Ends the current session on the server and forgets it. */
  logout(): Promise<void>;
  /** The current session (its tokens change with every refresh), if any. */
  readonly session: Session | undefined;
  /** Replaces (or, with `undefined`, forgets) the session. */
  setSession(session: Session | undefined): void;
  /** Replaces (or, with `undefined`, forgets) the API key. */
  setApiKey(apiKey: string | undefined): void;
}

/** Requests after which a 401 means wrong credentials, never an expired access token. */
const NO_REFRESH_PATHS = new Set([
  "/api/auth/login",
  "/api/auth/register",
  "/api/auth/refresh",
  "/api/auth/password",
]);

const PROXY_PATH = "/api/v1/proxy/{provider}/{path}";

/**
 * The default path serializer, except that the proxy's `{path}` keeps its slashes
 * (`chat/completions`): each segment is encoded on its own, as the server refuses encoded slashes.
 */
const pathSerializer: PathSerializer = (pathname, params) => {
  const path = params.path;
  // `pathname` is the whole URL template, the base URL included.
  if (!pathname.endsWith(PROXY_PATH) || typeof path !== "string") return defaultPathSerializer(pathname, params);
  const { path: _path, ...rest } = params;
  const segments = path.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/");
  return defaultPathSerializer(pathname, rest).replace("{path}", segments);
};

/**
 * A typed Koryphaios client: every operation of `docs/openapi.yaml`, with its request and
 * response types, through openapi-fetch.
 *
 * ```ts
 * const kor = createKoryphaiosClient({ baseUrl: "http://localhost:3000", apiKey: "kor_…" });
 * const { data, error } = await kor.GET("/api/v1/credentials", { params: { query: { limit: 10 } } });
 * ```
 */
export function createKoryphaiosClient(options: KoryphaiosClientOptions): KoryphaiosClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const baseFetch: FetchLike = options.fetch ?? ((request, init) => globalThis.fetch(request, init));
  const retries = options.retry?.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0 || retries > 10) {
    throw new RangeError("retry.retries must be a whole number from 0 to 10");
  }
  const maxDelaySeconds = options.retry?.maxDelaySeconds ?? 60;
  let apiKey = options.apiKey;
  let session = options.session ? { ...options.session } : undefined;
  let refreshing: Promise<boolean> | undefined;

  const setSession = (next: Session | undefined): void => {
    session = next ? { accessToken: next.accessToken, refreshToken: next.refreshToken } : undefined;
    options.onSessionChange?.(session ? { ...session } : undefined);
  };

  /** Sets the credential unless the caller set one; returns the access token it used. */
  const authenticate = (request: Request): string | undefined => {
    if (request.headers.has("authorization") || request.headers.has("x-api-key")) return undefined;
    if (apiKey !== undefined) {
      request.headers.set("x-api-key", apiKey);
      return undefined;
    }
    if (session !== undefined) {
      request.headers.set("authorization", `Bearer ${session.accessToken}`);
      return session.accessToken;
    }
    return undefined;
  };

  /** Exchanges the refresh token for a new pair; concurrent callers share one exchange. */
  const refresh = (usedAccessToken: string): Promise<boolean> => {
    // Another request refreshed already: retry with the new token, do not spend a refresh token.
    if (session === undefined) return Promise.resolve(false);
    if (session.accessToken !== usedAccessToken) return Promise.resolve(true);
    refreshing ??= (async () => {
      const refreshToken = session?.refreshToken;
      if (refreshToken === undefined) return false;
      const response = await baseFetch(
        new Request(`${baseUrl}/api/auth/refresh`, {
          method: "POST",
          headers: { ...options.headers, "content-type": "application/json" },
          body: JSON.stringify({ refreshToken }),
        }),
      );
      if (response.ok) {
        const pair = (await response.json()) as SessionResponse;
        setSession({ accessToken: pair.accessToken, refreshToken: pair.refreshToken });
        return true;
      }
      await response.body?.cancel();
      // A refused refresh token ends the session; anything else (429, 503) leaves it to retry.
      if (response.status === 401) setSession(undefined);
      return false;
    })().finally(() => {
      refreshing = undefined;
    });
    return refreshing;
  };

  /** The fetch under openapi-fetch: credentials, one refresh on 401, capped retries on 429. */
  const send: FetchLike = async (original, init) => {
    const path = new URL(original.url).pathname;
    let refreshed = false;
    let retried = 0;
    for (;;) {
      // A clone per attempt keeps the original's body for the next one.
      const request = original.clone();
      const usedAccessToken = authenticate(request);
      const response = await baseFetch(request, init);
      if (
        response.status === 401 &&
        !refreshed &&
        usedAccessToken !== undefined &&
        !NO_REFRESH_PATHS.has(path)
      ) {
        refreshed = true; // once per request, whatever happens: never a loop
        if (await refresh(usedAccessToken)) {
          await response.body?.cancel();
          continue;
        }
        return response;
      }
      if (response.status === 429 && retried < retries) {
        const wait = parseRetryAfter(response.headers.get("retry-after")) ?? 1;
        if (wait <= maxDelaySeconds) {
          retried += 1;
          await response.body?.cancel();
          await new Promise((resolve) => setTimeout(resolve, wait * 1000));
          continue;
        }
      }
      return response;
    }
  };

  const client = createClient<paths>({
    baseUrl,
    fetch: send,
    pathSerializer,
    ...(options.headers ? { headers: options.headers } : {}),
  });

  const extras = {
    async login(credentials: CredentialsRequest): Promise<SessionResponse> {
      const { data, error, response } = await client.POST("/api/auth/login", { body: credentials });
      if (data === undefined) throw KoryphaiosError.fromResponse(response, error);
      setSession({ accessToken: data.accessToken, refreshToken: data.refreshToken });
      return data;
    },
    async logout(): Promise<void> {
      if (session === undefined) return;
      const { error, response } = await client.POST("/api/auth/logout");
      setSession(undefined);
      if (!response.ok && response.status !== 401) throw KoryphaiosError.fromResponse(response, error);
    },
    setSession,
    setApiKey(next: string | undefined): void {
      apiKey = next;
    },
  };
  // A getter, not a copied value (Object.assign would read it once).
  const withSession = Object.defineProperty(Object.assign(client, extras), "session", {
    get: (): Session | undefined => (session ? { ...session } : undefined),
    enumerable: true,
  });
  return withSession as KoryphaiosClient;
}
