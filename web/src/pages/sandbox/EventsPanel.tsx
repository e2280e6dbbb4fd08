// The sandbox's state history and live state changes (GET …/events, server-sent events).

import { useState } from "react";
import type { SandboxEvent } from "../../api/client";
import { StateBadge } from "../../components/common";
import { formatTime } from "../../lib/format";
import { useSseStream } from "./useStream";

export function EventsPanel({ sandboxId, onState }: { sandboxId: string; onState: () => void }) {
  const [events, setEvents] = useState<SandboxEvent[]>([]);
  const { status, error } = useSseStream(`/v1/sandboxes/${encodeURIComponent(sandboxId)}/events`, (m) => {
    let ev: SandboxEvent;
    try {
      ev = JSON.parse(m.data) as SandboxEvent;
    } catch {
      return;
    }
    setEvents((list) => {
      if (ev.kind === "progress") {
        // Keep only the latest progress line after the last state change.
        const last = list[list.length - 1];
        if (last?.kind === "progress") return [...list.slice(0, -1), ev];
      }
      return list.some((e) => e.seq === ev.seq) ? list : [...list, ev];
    });
    if (ev.kind === "state") onState();
  });
  return (
    <div>
      {error && <p className="muted small">History stream: {error}</p>}
      {events.length === 0 && status !== "error" && <p className="muted">No events yet.</p>}
      <ol className="timeline" aria-label="State history">
        {events.map((e) => (
          <li key={e.seq} data-kind={e.kind}>
            <time className="muted small">{formatTime(e.at)}</time>
            {e.state ? <StateBadge state={e.state} /> : <span className="tag">progress</span>}
            <span className="wrap">
              {e.reason && <span className="reason">{e.reason}</span>}
              {e.message && <span className="muted"> {e.message}</span>}
            </span>
          </li>
        ))}
      </ol>
    </div>
  );
}
