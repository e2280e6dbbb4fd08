import { describe, expect, it } from "vitest";
import {
  checkCpu,
  checkCredentials,
  checkEnv,
  checkGpuCount,
  checkImageReference,
  checkMemory,
  checkName,
  checkTimeout,
  formatBytes,
  formatCpu,
  parseBytes,
  parseCpu,
} from "./validate";

// The same cases as crates/types (quantity.rs, api.rs, env.rs): the console says what the API
// would say.
describe("CPU", () => {
  it("reads cores, fractions and millicores", () => {
    expect(parseCpu("1")).toEqual({ ok: true, value: 1000 });
    expect(parseCpu("0.5")).toEqual({ ok: true, value: 500 });
    expect(parseCpu("500m")).toEqual({ ok: true, value: 500 });
    expect(parseCpu(" 2 ")).toEqual({ ok: true, value: 2000 });
    expect(parseCpu(".25")).toEqual({ ok: true, value: 250 });
    expect(formatCpu(500)).toBe("500m");
    expect(formatCpu(2000)).toBe("2");
  });
  it("refuses what the API refuses, in its words", () => {
    expect(parseCpu("abc")).toEqual({
      ok: false,
      error: '"abc" is not a valid CPU amount (examples: "1", "0.5", "500m")',
    });
    expect(parseCpu("0.0001")).toEqual({ ok: false, error: '"0.0001" is not a whole number of millicores' });
    expect(parseCpu("1.5m").ok).toBe(false);
    expect(parseCpu("").ok).toBe(false);
    expect(parseCpu("-1").ok).toBe(false);
    expect(checkCpu("1000")).toBe("cpu must be between 10m and 64");
    expect(checkCpu("5m")).toBe("cpu must be between 10m and 64");
    expect(checkCpu("10m")).toBeUndefined();
    expect(checkCpu("64")).toBeUndefined();
    expect(checkCpu("")).toMatch(/required/);
  });
});

describe("memory", () => {
  it("reads binary and decimal suffixes", () => {
    expect(parseBytes("2Gi")).toEqual({ ok: true, value: 2n << 30n });
    expect(parseBytes("512Mi")).toEqual({ ok: true, value: 512n << 20n });
    expect(parseBytes("1G")).toEqual({ ok: true, value: 1000000000n });
    expect(parseBytes("1.5Gi")).toEqual({ ok: true, value: 3n << 29n });
    expect(parseBytes("2GiB")).toEqual({ ok: true, value: 2n << 30n });
    expect(parseBytes("1048576")).toEqual({ ok: true, value: 1048576n });
    expect(formatBytes(2n << 30n)).toBe("2Gi");
    expect(formatBytes(1000)).toBe("1000");
  });
  it("refuses malformed sizes and sizes out of bounds", () => {
    expect(parseBytes("2 gigs")).toEqual({
      ok: false,
      error: '"2 gigs" is not a valid size (examples: "2Gi", "512Mi", "1G", "1048576")',
    });
    expect(parseBytes("0.5").ok).toBe(false);
    expect(checkMemory("1Ki")).toBe("memory must be between 32Mi and 512Gi");
    expect(checkMemory("1Ti")).toBe("memory must be between 32Mi and 512Gi");
    expect(checkMemory("32Mi")).toBeUndefined();
  });
});

describe("other fields", () => {
  it("checks timeouts against the server's bounds", () => {
    expect(checkTimeout("0")).toBe("timeout_s must be between 1 and 604800 seconds");
    expect(checkTimeout("3600")).toBeUndefined();
    expect(checkTimeout("1.5")).toBe("timeout_s must be a whole number of seconds");
    expect(
      checkTimeout("120", {
        timeout_default_s: 60,
        timeout_min_s: 1,
        timeout_max_s: 100,
        cpu_default: "1",
        cpu_max: "4",
        memory_default: "1Gi",
        memory_min: "32Mi",
        memory_max: "8Gi",
      }),
    ).toBe("timeout_s must be between 1 and 100 seconds");
  });
  it("checks names like the API", () => {
    expect(checkName("name", "web-1")).toBeUndefined();
    for (const bad of ["Bad Name", "-x", "x-", "", "a".repeat(64), "x_y"]) {
      expect(checkName("name", bad)).toBe(
        "name must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
      );
    }
  });
  it("checks image references and credentials", () => {
    expect(checkImageReference("docker.io/library/python:3.12")).toBeUndefined();
    expect(checkImageReference("bad ref")).toBe("image reference must not contain spaces or control characters");
    expect(checkImageReference("")).toBe("image reference must be 1 to 512 characters");
    expect(checkCredentials("u", "")).toBe("give both image.username and image.password, or neither");
    expect(checkCredentials("", "")).toBeUndefined();
    expect(checkCredentials("u", "p")).toBeUndefined();
  });
  it("checks environment rows", () => {
    const e = checkEnv([
      { key: "GOOD", value: "1" },
      { key: "1X", value: "y" },
      { key: "", value: "" },
      { key: "GOOD", value: "2" },
      { key: "", value: "orphan" },
      { key: "NUL", value: "a\0b" },
    ]);
    expect(e.rows[0]).toBeUndefined();
    expect(e.rows[1]).toBe(
      `environment variable name "1X" is invalid: use letters, digits and '_', not starting with a digit`,
    );
    expect(e.rows[2]).toBeUndefined();
    expect(e.rows[3]).toMatch(/already set/);
    expect(e.rows[4]).toMatch(/name/);
    expect(e.rows[5]).toBe('environment variable "NUL" has a NUL byte in its value');
    expect(checkEnv([{ key: "BIG", value: "x".repeat(200_000) }]).all).toMatch(/too large/);
  });
  it("checks GPU counts", () => {
    expect(checkGpuCount("1")).toBeUndefined();
    expect(checkGpuCount("9")).toBe("GPU count must be between 1 and 8");
    expect(checkGpuCount("0")).toBe("GPU count must be between 1 and 8");
  });
});
