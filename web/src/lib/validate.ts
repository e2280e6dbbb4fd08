// The API's validation rules (crates/types: quantity.rs, env.rs, api.rs), mirrored so that the
// console can say what is wrong while the user types, in the same words the server would use.

/** Bounds of sandbox requests, as `GET /v1/config` gives them. */
export interface Limits {
  timeout_default_s: number;
  timeout_min_s: number;
  timeout_max_s: number;
  cpu_default: string;
  cpu_max: string;
  memory_default: string;
  memory_min: string;
  memory_max: string;
}

export const DEFAULT_LIMITS: Limits = {
  timeout_default_s: 3600,
  timeout_min_s: 1,
  timeout_max_s: 604800,
  cpu_default: "1",
  cpu_max: "64",
  memory_default: "1Gi",
  memory_min: "32Mi",
  memory_max: "512Gi",
};

/** A value, or what is wrong with the text. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

const U32_MAX = 4294967295n;
const U64_MAX = 18446744073709551615n;

/** Rust's `{:?}` of a string, for messages (the text shortened to 40 characters). */
function quoted(s: string): string {
  return JSON.stringify([...s].slice(0, 40).join(""));
}

/** `digits[.digits]` → integer part, fraction digits as a numerator, and its denominator. */
function parseDecimal(s: string): { i: bigint; f: bigint; d: bigint } | null {
  const dot = s.indexOf(".");
  const int = dot < 0 ? s : s.slice(0, dot);
  const frac = dot < 0 ? "" : s.slice(dot + 1);
  if (int === "" && frac === "") return null;
  if (!/^[0-9]*$/.test(int) || !/^[0-9]*$/.test(frac)) return null;
  if (int.length > 20 || frac.length > 9) return null;
  return {
    i: int === "" ? 0n : BigInt(int),
    f: frac === "" ? 0n : BigInt(frac),
    d: 10n ** BigInt(frac.length),
  };
}

/** CPU as the API reads it: `"1"`, `"0.5"`, `"500m"` → millicores. */
export function parseCpu(text: string): Parsed<number> {
  const t = text.trim();
  const malformed = {
    ok: false as const,
    error: `${quoted(text)} is not a valid CPU amount (examples: "1", "0.5", "500m")`,
  };
  const [num, scale] = t.endsWith("m") ? [t.slice(0, -1), 1n] : [t, 1000n];
  const p = parseDecimal(num);
  if (!p) return malformed;
  const total = p.i * scale * p.d + p.f * scale;
  if (total % p.d !== 0n) return { ok: false, error: `${quoted(text)} is not a whole number of millicores` };
  const m = total / p.d;
  if (m > U32_MAX) return { ok: false, error: `${quoted(text)} is too large` };
  return { ok: true, value: Number(m) };
}

/** Millicores as the API writes them: `1`, `500m`. */
export function formatCpu(m: number): string {
  return m % 1000 === 0 ? String(m / 1000) : `${m}m`;
}

const SIZE_SUFFIXES: [string, bigint][] = [
  ["Ki", 1n << 10n],
  ["Mi", 1n << 20n],
  ["Gi", 1n << 30n],
  ["Ti", 1n << 40n],
  ["k", 1000n],
  ["K", 1000n],
  ["M", 1000000n],
  ["G", 1000000000n],
  ["T", 1000000000000n],
];

/** A size as the API reads it: `"2Gi"`, `"512Mi"`, `"1G"`, `"1048576"` → bytes. */
export function parseBytes(text: string): Parsed<bigint> {
  let t = text.trim();
  const malformed = {
    ok: false as const,
    error: `${quoted(text)} is not a valid size (examples: "2Gi", "512Mi", "1G", "1048576")`,
  };
  if (t.endsWith("B")) t = t.slice(0, -1);
  let num = t;
  let scale = 1n;
  for (const [suffix, mul] of SIZE_SUFFIXES) {
    if (t.endsWith(suffix)) {
      num = t.slice(0, -suffix.length);
      scale = mul;
      break;
    }
  }
  const p = parseDecimal(num);
  if (!p) return malformed;
  const total = p.i * scale * p.d + p.f * scale;
  if (total % p.d !== 0n) return { ok: false, error: `${quoted(text)} is not a whole number of bytes` };
  const b = total / p.d;
  if (b > U64_MAX) return { ok: false, error: `${quoted(text)} is too large` };
  return { ok: true, value: b };
}

/** Bytes as the API writes them: `2Gi`, `512Mi`, `1000`. */
export function formatBytes(b: bigint | number): string {
  const v = BigInt(b);
  for (const [suffix, mul] of [
    ["Ti", 1n << 40n],
    ["Gi", 1n << 30n],
    ["Mi", 1n << 20n],
    ["Ki", 1n << 10n],
  ] as const) {
    if (v >= mul && v % mul === 0n) return `${v / mul}${suffix}`;
  }
  return String(v);
}

function limitCpu(text: string, fallback: number): number {
  const p = parseCpu(text);
  return p.ok ? p.value : fallback;
}

function limitBytes(text: string, fallback: bigint): bigint {
  const p = parseBytes(text);
  return p.ok ? p.value : fallback;
}

/** `cpu`: a CPU amount between 10m and the server's maximum. Undefined when valid. */
export function checkCpu(text: string, limits: Limits = DEFAULT_LIMITS): string | undefined {
  if (text.trim() === "") return "cpu is required (e.g. 1, 0.5 or 500m)";
  const p = parseCpu(text);
  if (!p.ok) return p.error;
  const max = limitCpu(limits.cpu_max, 64000);
  if (p.value < 10 || p.value > max) return `cpu must be between 10m and ${formatCpu(max)}`;
  return undefined;
}

/** `memory`: a size between the server's bounds. */
export function checkMemory(text: string, limits: Limits = DEFAULT_LIMITS): string | undefined {
  if (text.trim() === "") return "memory is required (e.g. 2Gi or 512Mi)";
  const p = parseBytes(text);
  if (!p.ok) return p.error;
  const min = limitBytes(limits.memory_min, 32n << 20n);
  const max = limitBytes(limits.memory_max, 512n << 30n);
  if (p.value < min || p.value > max) {
    return `memory must be between ${formatBytes(min)} and ${formatBytes(max)}`;
  }
  return undefined;
}

/** `timeout_s`: whole seconds within the server's bounds. */
export function checkTimeout(text: string, limits: Limits = DEFAULT_LIMITS, field = "timeout_s"): string | undefined {
  const t = text.trim();
  if (!/^[0-9]+$/.test(t)) return `${field} must be a whole number of seconds`;
  const v = Number(t);
  if (v < limits.timeout_min_s || v > limits.timeout_max_s) {
    return `${field} must be between ${limits.timeout_min_s} and ${limits.timeout_max_s} seconds`;
  }
  return undefined;
}

/** A sandbox or project name: 1–63 of `[a-z0-9-]`, not starting or ending with `-`. */
export function checkName(field: string, name: string): string | undefined {
  const ok = /^[a-z0-9-]{1,63}$/.test(name) && !name.startsWith("-") && !name.endsWith("-");
  return ok
    ? undefined
    : `${field} must be 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'`;
}

export const MAX_IMAGE_REF = 512;

/** An image reference's shape (the registry decides whether it exists). */
export function checkImageReference(r: string): string | undefined {
  if (r.length === 0 || r.length > MAX_IMAGE_REF) {
    return `image reference must be 1 to ${MAX_IMAGE_REF} characters`;
  }
  if (/[\s\p{Cc}]/u.test(r)) return "image reference must not contain spaces or control characters";
  return undefined;
}

/** Registry credentials come in pairs. */
export function checkCredentials(username: string, password: string): string | undefined {
  return (username !== "") !== (password !== "")
    ? "give both image.username and image.password, or neither"
    : undefined;
}

/** A portable environment variable name. */
export function validEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) && name.length <= 256;
}

export const MAX_ENV_VARS = 1000;
export const MAX_ENV_BYTES = 128 * 1024;

export interface EnvRow {
  key: string;
  value: string;
}

/** Errors of environment rows: per row index, and one for the whole set. */
export interface EnvErrors {
  rows: Record<number, string>;
  all?: string;
}

export function checkEnv(rows: EnvRow[]): EnvErrors {
  const errors: EnvErrors = { rows: {} };
  const seen = new Map<string, number>();
  let total = 0;
  let count = 0;
  const utf8 = new TextEncoder();
  rows.forEach((row, i) => {
    if (row.key === "" && row.value === "") return;
    count += 1;
    if (row.key === "") {
      errors.rows[i] = "give the variable a name";
    } else if (!validEnvName(row.key)) {
      const name = JSON.stringify([...row.key].slice(0, 64).join(""));
      errors.rows[i] = `environment variable name ${name} is invalid: use letters, digits and '_', not starting with a digit`;
    } else if (row.value.includes("\0")) {
      errors.rows[i] = `environment variable ${JSON.stringify(row.key)} has a NUL byte in its value`;
    } else if (seen.has(row.key)) {
      errors.rows[i] = `${row.key} is already set above`;
    }
    seen.set(row.key, i);
    total += utf8.encode(row.key).length + utf8.encode(row.value).length + 2;
  });
  if (count > MAX_ENV_VARS) errors.all = `too many environment variables (at most ${MAX_ENV_VARS})`;
  else if (total > MAX_ENV_BYTES) {
    errors.all = `environment variables are too large (at most ${MAX_ENV_BYTES} bytes in all)`;
  }
  return errors;
}

/** Rows with a name, as the API's `env` object. */
export function envObject(rows: EnvRow[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const r of rows) if (r.key !== "") env[r.key] = r.value;
  return env;
}

export const GPU_FRACTIONS = [25, 50, 75, 100] as const;

export function checkGpuCount(text: string): string | undefined {
  const t = text.trim();
  if (!/^[0-9]+$/.test(t) || Number(t) < 1 || Number(t) > 8) return "GPU count must be between 1 and 8";
  return undefined;
}
