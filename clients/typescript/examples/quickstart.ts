// The README's example, type-checked with the rest.
import { createKoryphaiosClient, proxyConfig, unwrap, KoryphaiosError } from "../src/index.js";

const kor = createKoryphaiosClient({ baseUrl: "http://localhost:3000", retry: { retries: 2 } });
await kor.login({ username: "ada", password: "correct horse battery staple" });
const cred = await unwrap(kor.POST("/api/v1/credentials", { body: { provider: "openai", credential: "sk-…" } }));
const { key } = await unwrap(kor.POST("/api/v1/keys", { body: { name: "agent", scopes: ["proxy:openai"] } }));
const openaiOptions = proxyConfig("http://localhost:3000", "openai", key); // new OpenAI(openaiOptions)
try {
  await unwrap(kor.GET("/api/v1/credentials/{id}", { params: { path: { id: cred.id } } }));
} catch (e) {
  if (e instanceof KoryphaiosError) console.error(e.status, e.code, e.requestId, e.details);
}
console.log(openaiOptions.baseURL);
