// Every path and method of docs/openapi.yaml is called in examples/ (which `tsc --noEmit` checks),
// so a new route fails here until an example uses it.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./harness.js";

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/** `METHOD path` for every operation, read from the document's `paths` (two-space YAML). */
function operations(): string[] {
  const yaml = readFileSync(join(packageRoot, "..", "..", "docs", "openapi.yaml"), "utf8");
  const found: string[] = [];
  let inPaths = false;
  let path: string | undefined;
  for (const line of yaml.split("\n")) {
    if (/^\S/.test(line)) inPaths = line === "paths:";
    if (!inPaths) continue;
    const pathMatch = /^ {2}(\/\S*):\s*$/.exec(line) ?? /^ {2}'(\/[^']*)':\s*$/.exec(line);
    if (pathMatch) {
      path = pathMatch[1];
      continue;
    }
    const methodMatch = /^ {4}([a-z]+):\s*$/.exec(line);
    if (methodMatch && path && METHODS.includes(methodMatch[1] ?? "")) {
      found.push(`${(methodMatch[1] ?? "").toUpperCase()} ${path}`);
    }
  }
  return found;
}

test("examples/ call every operation of docs/openapi.yaml", () => {
  const expected = operations();
  assert.ok(expected.length >= 40, `read only ${expected.length} operations from docs/openapi.yaml`);
  const dir = join(packageRoot, "examples");
  const source = readdirSync(dir)
    .filter((f) => f.endsWith(".ts"))
    .map((f) => readFileSync(join(dir, f), "utf8"))
    .join("\n");
  const called = new Set<string>();
  for (const match of source.matchAll(/\.(GET|PUT|POST|DELETE|PATCH|HEAD|OPTIONS|TRACE)\(\s*"([^"]+)"/g)) {
    called.add(`${match[1]} ${match[2]}`);
  }
  const missing = expected.filter((op) => !called.has(op));
  assert.deepEqual(missing, [], `add these operations to clients/typescript/examples/: ${missing.join(", ")}`);
  const unknown = [...called].filter((op) => !expected.includes(op));
  assert.deepEqual(unknown, [], "examples call operations the document does not have");
});
