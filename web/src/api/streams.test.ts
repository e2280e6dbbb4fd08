import { describe, expect, it } from "vitest";
import { fromBase64, ndjson, sse } from "./streams";

function body(...chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(enc.encode(ch));
      c.close();
    },
  });
}

async function all<T>(g: AsyncGenerator<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of g) out.push(x);
  return out;
}

describe("stream readers", () => {
  it("read server-sent events split anywhere, with comments and CRLF (the last id carries over, as in the spec)", async () => {
    const got = await all(sse(body("event: log\nid: 4", "2\ndata: {\"a\"", ":1}\n\n:keep-alive\n\r\nevent: end\r\ndata: running\r\n\r\n")));
    expect(got).toEqual([
      { event: "log", id: "42", data: '{"a":1}' },
      { event: "end", id: "42", data: "running" },
    ]);
  });
  it("read NDJSON", async () => {
    const got = await all(ndjson(body('{"event":"started","pid":7}\n{"event":"ex', 'ited","exit_code":0}\n')));
    expect(got).toEqual([
      { event: "started", pid: 7 },
      { event: "exited", exit_code: 0 },
    ]);
  });
  it("decode base64 to bytes", () => {
    expect(new TextDecoder().decode(fromBase64(btoa("héllo".replace("é", "e"))))).toBe("hello");
  });
});
