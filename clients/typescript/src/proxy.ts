import type { components } from "./generated/schema.js";

/** A provider of the credential proxy (the document's provider enum). */
export type Provider = components["schemas"]["CreateCredentialRequest"]["provider"];

/** What the OpenAI and Anthropic SDKs (and most others) take: `new OpenAI(proxyConfig(…))`. */
export interface ProxyConfig {
  /** `<server>/api/v1/proxy/<provider>`: the SDK appends the provider's own paths. */
  baseURL: string;
  /** A Koryphaios API key (`kor_…`) or agent token (`kat_…`) with scope `proxy:<provider>`. */
  apiKey: string;
}

/**
 * The `{ baseURL, apiKey }` pair that points a provider SDK at the Koryphaios credential proxy:
 * the SDK authenticates to Koryphaios with `apiKey` (the OpenAI SDK as `Authorization: Bearer`,
 * the Anthropic SDK as `x-api-key`), and Koryphaios calls the provider with the stored credential,
 * which the caller never sees.
 *
 * ```ts
 * const openai = new OpenAI(proxyConfig("https://kor.example.com", "openai", process.env.KOR_KEY!));
 * ```
 */
export function proxyConfig(serverUrl: string, provider: Provider, apiKey: string): ProxyConfig {
  const base = serverUrl.replace(/\/+$/, "");
  return { baseURL: `${base}/api/v1/proxy/${encodeURIComponent(provider)}`, apiKey };
}
