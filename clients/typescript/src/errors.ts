import type { components } from "./generated/schema.js";

/** The JSON body of every error response (the document's `ErrorBody`). */
export type ErrorBody = components["schemas"]["ErrorBody"];
/** One field's problem in a `validation_failed` error. */
export type FieldDetail = components["schemas"]["FieldDetail"];

/**
 * A non-2xx answer from Koryphaios, with the error envelope's fields.
 *
 * `code` is the stable, machine-readable code (`validation_failed`, `rate_limited`, …);
 * `requestId` matches the `X-Request-Id` header and the server's logs and audit records;
 * `details` names each invalid field of a `validation_failed` error; `retryAfter` is the number
 * of seconds to wait on a 429 (or a 503 while starting), from the body or the `Retry-After` header.
 */
export class KoryphaiosError extends Error {
  override readonly name = "KoryphaiosError";
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;
  readonly details: FieldDetail[];
  readonly retryAfter: number | undefined;

  constructor(init: {
    status: number;
    code: string;
    message: string;
    requestId?: string | undefined;
    details?: FieldDetail[] | null | undefined;
    retryAfter?: number | null | undefined;
  }) {
    super(`${init.status} ${init.code}: ${init.message}`);
    this.status = init.status;
    this.code = init.code;
    this.requestId = init.requestId;
    this.details = init.details ?? [];
    this.retryAfter = init.retryAfter ?? undefined;
  }

  /**
   * Builds the error from a response and its body as openapi-fetch parsed it (the `error` of a
   * failed call): the envelope when the body is one, else a generic `http_<status>` code.
   */
  static fromResponse(response: Response, body: unknown): KoryphaiosError {
    const headerRequestId = response.headers.get("x-request-id") ?? undefined;
    const headerRetryAfter = parseRetryAfter(response.headers.get("retry-after"));
    if (isErrorBody(body)) {
      return new KoryphaiosError({
        status: response.status,
        code: body.code,
        message: body.error,
        requestId: body.requestId || headerRequestId,
        details: body.details,
        retryAfter: body.retryAfter ?? headerRetryAfter,
      });
    }
    return new KoryphaiosError({
      status: response.status,
      code: `http_${response.status}`,
      message: response.statusText || "request failed",
      requestId: headerRequestId,
      retryAfter: headerRetryAfter,
    });
  }
}

function isErrorBody(body: unknown): body is ErrorBody {
  if (typeof body !== "object" || body === null) return false;
  const candidate = body as Record<string, unknown>;
  return typeof candidate.code === "string" && typeof candidate.error === "string";
}

/**
 * `Retry-After` in seconds: a whole number of seconds or an HTTP date (RFC 9110 §10.2.3);
 * `undefined` when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number.parseInt(trimmed, 10);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

/** What an openapi-fetch call resolves to (`{data, error, response}`). */
interface CallResult {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The success data of a call; `undefined` for a 204. */
export type Unwrapped<R extends CallResult> = R extends { data: infer D }
  ? [D] extends [never]
    ? undefined
    : Exclude<D, undefined>
  : never;

/**
 * Awaits an openapi-fetch call and returns its data, or throws a {@link KoryphaiosError} for a
 * non-2xx answer:
 *
 * ```ts
 * const me = await unwrap(client.GET("/api/auth/me"));
 * ```
 */
export async function unwrap<R extends CallResult>(call: Promise<R> | R): Promise<Unwrapped<R>> {
  const result = await call;
  if (!result.response.ok) throw KoryphaiosError.fromResponse(result.response, result.error);
  return result.data as Unwrapped<R>;
}
