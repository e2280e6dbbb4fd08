// Readers of the API's streams: server-sent events (logs, events) and NDJSON (exec). The
// browser's EventSource cannot send an Authorization header, so these read a fetch body.

export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/** Lines of a byte stream (`\n` or `\r\n`), the last one without its newline if unterminated. */
export async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        yield line.endsWith("\r") ? line.slice(0, -1) : line;
      }
    }
    buf += decoder.decode();
    if (buf !== "") yield buf;
  } finally {
    reader.releaseLock();
  }
}

/** Server-sent events of a response body. */
export async function* sse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  let event = "message";
  let data: string[] = [];
  let id: string | undefined;
  for await (const line of lines(body)) {
    if (line === "") {
      if (data.length > 0) yield { event, data: data.join("\n"), id };
      event = "message";
      data = [];
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (data.length > 0) yield { event, data: data.join("\n"), id };
}

/** JSON values of an NDJSON body. */
export async function* ndjson<T>(body: ReadableStream<Uint8Array>): AsyncGenerator<T> {
  for await (const line of lines(body)) {
    if (line.trim() !== "") yield JSON.parse(line) as T;
  }
}

/** Bytes of base64 text. */
export function fromBase64(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
