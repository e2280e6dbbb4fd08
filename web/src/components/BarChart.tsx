// Hand-drawn SVG bar charts: spending per day (vertical) and shares of a total (horizontal).

import { formatMoney } from "../lib/format";

export interface Bar {
  label: string;
  value: number;
}

/** Days from `from` to `to` (UTC dates, `YYYY-MM-DD`), each with its amount (0 when absent). */
export function fillDays(byDay: Record<string, string>, from: string, to: string): Bar[] {
  const out: Bar[] = [];
  const start = new Date(`${from.slice(0, 10)}T00:00:00Z`);
  const end = new Date(`${to.slice(0, 10)}T00:00:00Z`);
  for (let d = start; d <= end && out.length < 400; d = new Date(d.getTime() + 86400_000)) {
    const key = d.toISOString().slice(0, 10);
    out.push({ label: key, value: Number(byDay[key] ?? 0) });
  }
  return out;
}

export function DayChart({ bars, currency, title }: { bars: Bar[]; currency: string; title: string }) {
  // Horizontal positions in percent of the width, vertical ones in pixels: the chart stretches
  // with the page without distorting its text.
  const H = 200;
  const top = 24;
  const bottom = 28;
  const max = Math.max(...bars.map((b) => b.value), 0);
  const slot = 100 / Math.max(bars.length, 1);
  const bw = slot * 0.7;
  const ih = H - top - bottom;
  const labelEvery = Math.max(1, Math.ceil(bars.length / 8));
  return (
    <figure className="chart">
      <svg width="100%" height={H} role="img" aria-label={title}>
        <line x1="0" x2="100%" y1={H - bottom} y2={H - bottom} className="axis" />
        <text x="0" y={14} className="chart-label">
          {max > 0 ? `max ${formatMoney(max, currency)} / day` : "nothing spent in this period"}
        </text>
        {bars.map((b, i) => {
          const h = max > 0 ? (b.value / max) * ih : 0;
          const x = i * slot + (slot - bw) / 2;
          return (
            <g key={b.label}>
              <rect
                x={`${x}%`}
                y={H - bottom - h}
                width={`${bw}%`}
                height={Math.max(h, b.value > 0 ? 1 : 0)}
                className="bar"
              >
                <title>{`${b.label}: ${formatMoney(b.value, currency)}`}</title>
              </rect>
              {i % labelEvery === 0 && (
                <text x={`${x + bw / 2}%`} y={H - 8} textAnchor="middle" className="chart-label">
                  {b.label.slice(5)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <figcaption className="sr-only">{title}</figcaption>
    </figure>
  );
}

export function ShareBars({ bars, currency, label }: { bars: Bar[]; currency: string; label: string }) {
  const max = Math.max(...bars.map((b) => b.value), 0);
  return (
    <ul className="share-bars" aria-label={label}>
      {bars.map((b) => (
        <li key={b.label}>
          <span className="share-label">{b.label}</span>
          <span className="share-track">
            <span className="share-fill" style={{ width: `${max > 0 ? (b.value / max) * 100 : 0}%` }} />
          </span>
          <span className="share-value">{formatMoney(b.value, currency)}</span>
        </li>
      ))}
    </ul>
  );
}
