// Follows a server-sent-events endpoint of the API with fetch (EventSource cannot send the
// Authorization header), until it ends or the component goes away.

import { useEffect, useRef, useState } from "react";
import { apiFetch, errorMessage } from "../../api/client";
import { sse, type SseMessage } from "../../api/streams";
import { useSession } from "../../session";

export type StreamStatus = "connecting" | "open" | "ended" | "error";

export function useSseStream(path: string | null, onMessage: (m: SseMessage) => void) {
  const { apiKey } = useSession();
  const [status, setStatus] = useState<StreamStatus>("connecting");
  const [error, setError] = useState<string>();
  const handler = useRef(onMessage);
  handler.current = onMessage;

  useEffect(() => {
    if (!path) return;
    const ctl = new AbortController();
    setStatus("connecting");
    setError(undefined);
    void (async () => {
      try {
        const res = await apiFetch(apiKey, path, { headers: { accept: "text/event-stream" }, signal: ctl.signal });
        setStatus("open");
        if (res.body) for await (const m of sse(res.body)) handler.current(m);
        if (!ctl.signal.aborted) setStatus("ended");
      } catch (e) {
        if (ctl.signal.aborted) return;
        setError(errorMessage(e));
        setStatus("error");
      }
    })();
    return () => ctl.abort();
  }, [path, apiKey]);

  return { status, error };
}
