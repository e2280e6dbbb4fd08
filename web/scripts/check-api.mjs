#!/usr/bin/env node
// Fails when src/api/schema.d.ts is not what `npm run gen:api` makes of openapi/sandpit.json
// (the API changed and the typed client was not regenerated).

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = mkdtempSync(join(tmpdir(), "sandpit-api-"));
try {
  const out = join(dir, "schema.d.ts");
  const cli = join(web, "node_modules", "openapi-typescript", "bin", "cli.js");
  execFileSync(process.execPath, [cli, join(web, "..", "openapi", "sandpit.json"), "-o", out], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const fresh = readFileSync(out, "utf8");
  const committed = readFileSync(join(web, "src", "api", "schema.d.ts"), "utf8");
  if (fresh !== committed) {
    console.error("web/src/api/schema.d.ts is out of date: run `npm --prefix web run gen:api` and commit it");
    process.exit(1);
  }
  console.log("web/src/api/schema.d.ts matches openapi/sandpit.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
