// Test helpers: a fake API behind a stubbed fetch, and rendering the app at a route.

import { render } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { vi } from "vitest";
import { AppRoutes, Providers, newQueryClient } from "../App";
import { KEY_STORAGE } from "../session";

export interface Call {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
}

type Reply = { status?: number; body?: unknown } | unknown;
type Handler = (call: Call) => Reply | Promise<Reply>;

/** A fake API: `"GET /v1/me"` → a handler or a fixed JSON body. Unknown routes answer 404. */
export function mockApi(routes: Record<string, Handler | object>) {
  const calls: Call[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = input instanceof Request ? input : new Request(String(input), init);
    const url = new URL(req.url);
    const text = await req.text();
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    const call: Call = { method: req.method, path: url.pathname, query: url.searchParams, body };
    calls.push(call);
    const route = routes[`${req.method} ${url.pathname}`];
    if (route === undefined) {
      return json(404, { code: "not_found", message: `no fake for ${req.method} ${url.pathname}` });
    }
    const reply = typeof route === "function" ? await (route as Handler)(call) : route;
    if (reply && typeof reply === "object" && "status" in reply && typeof reply.status === "number") {
      const r = reply as { status: number; body?: unknown };
      return json(r.status, r.body);
    }
    return json(200, reply);
  });
  vi.stubGlobal("fetch", fetchMock);
  return { calls, fetchMock };
}

function json(status: number, body: unknown): Response {
  if (status === 204 || body === undefined) return new Response(null, { status });
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

export const CONFIG = {
  version: "0.1.0",
  features: { sandbox: true },
  currency: "USD",
  default_image: "sandpit/busybox:latest",
  limits: {
    timeout_default_s: 3600,
    timeout_min_s: 1,
    timeout_max_s: 604800,
    cpu_default: "1",
    cpu_max: "64",
    memory_default: "1Gi",
    memory_min: "32Mi",
    memory_max: "512Gi",
  },
};

export function me(kyc = "verified") {
  return {
    user: { id: 1, name: "alice", role: "admin", kyc, created_at: "2026-11-01T00:00:00Z" },
    projects: [{ project: "default", role: "owner" }],
    key: {
      id: 1,
      name: "k",
      prefix: "sp_abc",
      user: "alice",
      project: null,
      created_at: "2026-11-01T00:00:00Z",
      revoked_at: null,
    },
  };
}

export const PROJECTS = [{ name: "default", created_at: "2026-11-01T00:00:00Z", role: "owner" }];

export function sandbox(over: Record<string, unknown> = {}) {
  const now = Date.now();
  return {
    id: "06h28gsc257mid1f90g0",
    name: "demo",
    project: "default",
    state: "running",
    state_reason: null,
    exit_code: null,
    image: "sandpit/busybox:latest",
    cpu: "1",
    memory: "2Gi",
    gpu: null,
    timeout_s: 3600,
    keep_running: false,
    created_at: new Date(now - 65_000).toISOString(),
    started_at: new Date(now - 60_000).toISOString(),
    ends_at: new Date(now + 3540_000).toISOString(),
    remaining_s: null,
    paused_at: null,
    terminated_at: null,
    metadata: {},
    ...over,
  };
}

export function usage(bySandbox: { sandbox: string; amount: string }[] = []) {
  return {
    currency: "USD",
    from: "2026-11-01T00:00:00Z",
    to: "2026-11-03T00:00:00Z",
    total: "1.250000",
    by_resource: { gpu: "1.000000", cpu: "0.250000" },
    by_sandbox: bySandbox.map((s) => ({ ...s, name: null, project: "default" })),
    by_project: { default: "1.250000" },
    by_day: { "2026-11-01": "0.250000", "2026-11-02": "1.000000" },
  };
}

/** Renders the app at `path` (below /ui), signed in unless `key` is null. */
export function renderApp(path: string, key: string | null = "sp_test") {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  const client = newQueryClient();
  client.setDefaultOptions({ queries: { retry: false, refetchOnWindowFocus: false } });
  return render(
    <Providers client={client}>
      <MemoryRouter initialEntries={[path]}>
        <AppRoutes />
      </MemoryRouter>
    </Providers>,
  );
}
