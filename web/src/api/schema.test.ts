// @vitest-environment node
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

describe("the typed API client", () => {
  it("is generated from the committed OpenAPI document", () => {
    const script = join(__dirname, "..", "..", "scripts", "check-api.mjs");
    const out = execFileSync(process.execPath, [script], { encoding: "utf8" });
    expect(out).toContain("matches");
  }, 30_000);
});
