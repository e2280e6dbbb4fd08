// The workload's log, followed live (GET …/logs?follow=true, server-sent events).

import { useEffect, useRef, useState } from "react";
import type { LogEntry } from "../../api/client";
import { useSseStream } from "./useStream";

const MAX_LINES = 5000;

export function LogsPanel({ sandboxId }: { sandboxId: string }) {
  const [entries, setEntries] = useState<LogEntry[]>([]);
  const [ended, setEnded] = useState<string>();
  const box = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  const { status, error } = useSseStream(
    `/v1/sandboxes/${encodeURIComponent(sandboxId)}/logs?follow=true`,
    (m) => {
      if (m.event === "end") {
        setEnded(m.data);
        return;
      }
      if (m.event !== "log") return;
      try {
        const e = JSON.parse(m.data) as LogEntry;
        setEntries((list) => (list.length >= MAX_LINES ? [...list.slice(-MAX_LINES + 1), e] : [...list, e]));
      } catch {
        /* not a log entry */
      }
    },
  );
  useEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [entries]);
  return (
    <div>
      <p className="muted small" aria-live="polite">
        {status === "connecting" && "Connecting…"}
        {status === "open" && "Following the log live."}
        {status === "ended" && `The log is complete${ended ? ` (sandbox ${ended})` : ""}.`}
        {status === "error" && `Log stream: ${error}`}
      </p>
      <pre
        className="logs"
        ref={box}
        data-testid="logs"
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {entries.length === 0 && <span className="muted">No output yet.</span>}
        {entries.map((e, i) => (
          <span key={i} className={`log-${e.stream}`}>
            {e.text}
            {e.text.endsWith("\n") ? "" : "\n"}
          </span>
        ))}
      </pre>
    </div>
  );
}
