// The committed src/generated/schema.ts is what docs/openapi.yaml generates today.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./harness.js";

test("generated types match docs/openapi.yaml", () => {
  const run = spawnSync(process.execPath, [join(packageRoot, "scripts", "generate.mjs"), "--check"], {
    cwd: packageRoot,
    encoding: "utf8",
  });
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
});
