// Display helpers: money, durations, sizes of things the API returns.

/**
 * A decimal money string (`"12.500000"`) in `currency`, shown with as many decimals as it needs:
 * cents for whole-cent amounts of 1 or more, else up to six (`$0.000104`). `precise` keeps four
 * decimals on large amounts too (a balance that is being spent by the second).
 */
export function formatMoney(
  amount: string | number | undefined | null,
  currency = "USD",
  precise = false,
): string {
  if (amount === undefined || amount === null || amount === "") return "—";
  const n = typeof amount === "number" ? amount : Number(amount);
  if (!Number.isFinite(n)) return String(amount);
  const abs = Math.abs(n);
  const wholeCents = Math.abs(Math.round(n * 100) - n * 100) < 1e-6;
  const digits =
    abs === 0 || (abs >= 1 && (wholeCents || !precise)) ? 2 : abs >= 1 || abs >= 0.01 ? 4 : 6;
  try {
    return new Intl.NumberFormat("en-US", {
      style: "currency",
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(n);
  } catch {
    return `${n.toFixed(digits)} ${currency}`;
  }
}

/** Seconds as `1h 02m 07s`, `4m 05s`, `12s`, `3d 4h 10m`. */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (d > 0) return `${d}d ${h}h ${pad(m)}m`;
  if (h > 0) return `${h}h ${pad(m)}m ${pad(sec)}s`;
  if (m > 0) return `${m}m ${pad(sec)}s`;
  return `${sec}s`;
}

/** How long ago `iso` was, from `now` (ms): `12s`, `5m 03s`, `2h 10m`. */
export function formatAge(iso: string, now: number): string {
  return formatDuration((now - Date.parse(iso)) / 1000);
}

/** A timestamp for tables: local date and time to the second. */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString("en-GB", {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export interface GpuLike {
  type: string;
  count?: number;
  fraction?: number;
}

/** `H100 × 2 @ 50%`, or `—` without a GPU. */
export function formatGpu(gpu: GpuLike | null | undefined): string {
  if (!gpu) return "—";
  return `${gpu.type} × ${gpu.count ?? 1} @ ${gpu.fraction ?? 100}%`;
}

/** A file size for people: `1.5 KiB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v >= 10 ? 0 : 1)} ${units[i]}`;
}

/** Permission bits as `rwxr-xr-x`. */
export function formatMode(mode: number): string {
  const bits = "rwxrwxrwx";
  let out = "";
  for (let i = 0; i < 9; i++) out += mode & (1 << (8 - i)) ? bits[i] : "-";
  return out;
}
