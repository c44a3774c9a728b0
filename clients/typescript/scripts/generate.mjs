#!/usr/bin/env node
// Generates src/generated/schema.ts from docs/openapi.yaml with openapi-typescript, or with
// --check regenerates into a temporary file and fails when it differs from the committed one.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const document = join(root, "..", "..", "docs", "openapi.yaml");
const committed = join(root, "src", "generated", "schema.ts");
const bin = join(root, "node_modules", ".bin", "openapi-typescript");
const check = process.argv.includes("--check");

function generate(output) {
  const run = spawnSync(bin, [document, "--empty-objects-unknown", "--output", output], {
    cwd: root,
    encoding: "utf8",
  });
  if (run.status !== 0) {
    process.stderr.write(run.stdout + run.stderr);
    console.error(`openapi-typescript failed on ${relative(root, document)}`);
    process.exit(1);
  }
}

if (!check) {
  generate(committed);
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), "kor-openapi-ts-"));
try {
  const fresh = join(dir, "schema.ts");
  generate(fresh);
  const want = readFileSync(fresh, "utf8");
  let have = "";
  try {
    have = readFileSync(committed, "utf8");
  } catch {
    // Missing: reported as a difference below.
  }
  if (want !== have) {
    const wantLines = want.split("\n");
    const haveLines = have.split("\n");
    let line = 0;
    while (line < wantLines.length && wantLines[line] === haveLines[line]) line += 1;
    console.error(
      `drift: src/generated/schema.ts differs from what docs/openapi.yaml generates (first at line ${line + 1}:\n` +
        `  committed: ${JSON.stringify(haveLines[line] ?? "<end of file>")}\n` +
        `  generated: ${JSON.stringify(wantLines[line] ?? "<end of file>")})\n` +
        "regenerate and commit it with:\n  cd clients/typescript && npm run generate",
    );
    process.exit(1);
  }
  console.log("drift: src/generated/schema.ts matches docs/openapi.yaml");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
