// Starts a real `sandpit serve` for the end-to-end tests: a temporary data directory and HOME,
// a free loopback port, a known admin key, simulated GPUs. Needs root, runc and busybox-static,
// like the server itself.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The sandpit binary: $E2E_SANDPIT_BIN, else `sandpit` on the PATH. */
export function sandpitBin() {
  const bin = process.env.E2E_SANDPIT_BIN;
  if (bin) return bin;
  const which = spawnSync("sh", ["-c", "command -v sandpit"], { encoding: "utf8" });
  if (which.status === 0) return which.stdout.trim();
  throw new Error("set E2E_SANDPIT_BIN to the sandpit binary (e.g. target/debug/sandpit)");
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a server. `env` adds configuration (e.g. `{ SANDPIT_ENABLE_SANDBOX: "false" }`); every
 * other SANDPIT_* variable of this process is left out (the server refuses unknown ones).
 */
export async function startServer({ env = {}, label = "server" } = {}) {
  const bin = sandpitBin();
  const root = mkdtempSync(join(tmpdir(), "sp-web-e2e-"));
  chmodSync(root, 0o711);
  const home = join(root, "home");
  mkdirSync(home, { mode: 0o700 });
  const data = join(root, "data");
  const port = await freePort();
  const key = `sp_${randomBytes(20).toString("hex")}`;
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("SANDPIT_") && k !== "REACT_APP_ENABLE_SANDBOX"),
  );
  const logPath = join(root, `${label}.log`);
  const log = createWriteStream(logPath);
  const child = spawn(bin, ["serve", "--data-dir", data, "--listen", `127.0.0.1:${port}`], {
    env: {
      ...inherited,
      HOME: home,
      RUST_LOG: "info",
      SANDPIT_BOOTSTRAP_KEY: key,
      SANDPIT_SIMULATE_GPUS: "H100x2,T4x2",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (exited) {
      throw new Error(`sandpit serve exited (${JSON.stringify(exited)}):\n${readFileSync(logPath, "utf8").slice(-4000)}`);
    }
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`sandpit serve did not answer in time; log in ${logPath}`);
    await sleep(100);
  }

  async function api(method, path, body, apiKey = key) {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${apiKey}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, body: json, headers: res.headers };
  }

  async function stop() {
    try {
      const list = await api("GET", "/v1/sandboxes?limit=1000");
      for (const s of list.body?.items ?? []) {
        if (s.state !== "terminated" && s.state !== "failed") await api("DELETE", `/v1/sandboxes/${s.id}`);
      }
    } catch {
      /* the server may be gone */
    }
    if (!exited) {
      child.kill("SIGTERM");
      for (let i = 0; i < 150 && !exited; i++) await sleep(100);
      if (!exited) child.kill("SIGKILL");
    }
    log.end();
    cleanup(data);
    if (!process.env.E2E_KEEP) rmSync(root, { recursive: true, force: true });
  }

  return { url, key, root, data, logPath, api, stop };
}

/** Kills leftover containers and unmounts everything under a data directory. */
function cleanup(data) {
  const runc = join(data, "runtime/runc");
  if (existsSync(runc)) {
    for (const name of readdirSync(runc)) {
      spawnSync("runc", ["--root", runc, "delete", "--force", name]);
    }
  }
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((p) => p && p.startsWith(`${data}/`))
    .sort((a, b) => b.split("/").length - a.split("/").length);
  for (const m of mounts) spawnSync("umount", ["-l", m]);
}
