export {
  createKoryphaiosClient,
  type CredentialsRequest,
  type FetchLike,
  type KoryphaiosClient,
  type KoryphaiosClientOptions,
  type RetryOptions,
  type Session,
  type SessionResponse,
} from "./client.js";
export {
  KoryphaiosError,
  parseRetryAfter,
  unwrap,
  type ErrorBody,
  type FieldDetail,
  type Unwrapped,
} from "./errors.js";
export { proxyConfig, type Provider, type ProxyConfig } from "./proxy.js";
export type { components, operations, paths } from "./generated/schema.js";
