// An in-browser terminal (xterm.js) over the exec API: each line runs as a streamed exec
// (NDJSON), its output shown as it comes; Ctrl-C ends it.

import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import { useEffect, useRef } from "react";
import { apiFetch, errorMessage, execOnce, type ExecStreamEvent } from "../../api/client";
import { fromBase64, ndjson } from "../../api/streams";
import { LineShell, type Running } from "../../lib/lineshell";
import { useSession } from "../../session";

export function TerminalPanel({ sandboxId, visible }: { sandboxId: string; visible: boolean }) {
  const { apiKey, api } = useSession();
  const host = useRef<HTMLDivElement>(null);
  const fitRef = useRef<FitAddon | null>(null);

  useEffect(() => {
    if (!host.current) return;
    const term = new Terminal({
      convertEol: true,
      cursorBlink: true,
      fontSize: 13,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
      theme: { background: "#0d1117", foreground: "#e6edf3" },
      scrollback: 5000,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fitRef.current = fit;
    try {
      fit.fit();
    } catch {
      /* not laid out yet */
    }
    const controllers = new Set<AbortController>();
    const path = `/v1/sandboxes/${encodeURIComponent(sandboxId)}/exec`;
    const shell = new LineShell({
      write: (t) => term.write(t),
      clear: () => term.clear(),
      run: (line, cwd): Running => {
        const ctl = new AbortController();
        controllers.add(ctl);
        const done = (async () => {
          try {
            const res = await apiFetch(apiKey, path, {
              method: "POST",
              headers: { "content-type": "application/json", accept: "application/x-ndjson" },
              body: JSON.stringify({ shell: line, cwd }),
              signal: ctl.signal,
            });
            if (!res.body) return;
            for await (const ev of ndjson<ExecStreamEvent>(res.body)) {
              if (ev.event === "stdout") term.write(fromBase64(ev.data));
              else if (ev.event === "stderr") term.write(fromBase64(ev.data));
              else if (ev.event === "exited") {
                if (ev.timed_out) term.write("\x1b[33m[timed out]\x1b[0m\n");
                else if (ev.signal) term.write(`\x1b[33m[killed by signal ${ev.signal}]\x1b[0m\n`);
                else if (ev.exit_code) term.write(`\x1b[33m[exit ${ev.exit_code}]\x1b[0m\n`);
              } else if (ev.event === "error") term.write(`\x1b[31m${ev.message}\x1b[0m\n`);
            }
          } catch (e) {
            if ((e as Error).name !== "AbortError") term.write(`\x1b[31m${errorMessage(e)}\x1b[0m\n`);
          } finally {
            controllers.delete(ctl);
          }
        })();
        return { abort: () => ctl.abort(), done };
      },
      changeDir: async (arg, cwd) => {
        try {
          const r = await execOnce(api, sandboxId, { shell: `cd ${arg || "~"} && pwd`, cwd });
          if (r.exit_code === 0) return { cwd: r.stdout.trim() };
          return { error: (r.stderr || r.stdout).trim() || `cd: ${arg}: cannot change directory` };
        } catch (e) {
          return { error: errorMessage(e) };
        }
      },
    });
    term.onData((d) => shell.input(d));
    term.write("\x1b[2mCommands run one at a time through the exec API. Ctrl-C stops one.\x1b[0m\n");
    void (async () => {
      try {
        const r = await execOnce(api, sandboxId, { shell: "pwd" });
        if (r.exit_code === 0) shell.cwd = r.stdout.trim() || undefined;
      } catch {
        /* the prompt shows ~ */
      }
      shell.prompt();
    })();
    const observer = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        /* hidden */
      }
    });
    observer.observe(host.current);
    return () => {
      observer.disconnect();
      for (const c of controllers) c.abort();
      term.dispose();
      fitRef.current = null;
    };
  }, [sandboxId, apiKey, api]);

  useEffect(() => {
    if (visible) {
      try {
        fitRef.current?.fit();
      } catch {
        /* not laid out */
      }
    }
  }, [visible]);

  return <div className="terminal" ref={host} data-testid="terminal" />;
}
