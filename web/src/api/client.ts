// The typed API client (openapi-fetch over the types generated from openapi/sandpit.json by
// `npm run gen:api`), plus raw fetches for streams, which the generated client does not read.

import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Sandbox = Schemas["SandboxView"];
export type SandboxState = Schemas["SandboxState"];
export type ConfigView = Schemas["ConfigView"];
export type MeView = Schemas["MeView"];
export type KycView = Schemas["KycView"];
export type GpuType = Schemas["GpuTypeView"];
export type CuratedImage = Schemas["CuratedImageView"];
export type CreateSandbox = Schemas["CreateSandbox"];
export type EstimateView = Schemas["EstimateView"];
export type UsageView = Schemas["UsageView"];
export type WalletView = Schemas["WalletView"];
export type ProjectView = Schemas["ProjectView"];
export type SandboxEvent = Schemas["SandboxEventView"];
export type LogEntry = Schemas["LogEntry"];
export type FileEntry = Schemas["FileEntryView"];
export type ExecStreamEvent = Schemas["ExecStreamEvent"];
export type ExecResult = Schemas["ExecResult"];
export type ErrorBody = Schemas["ErrorBody"];

export type Api = Client<paths>;

/** An error the API answered (`{code, message, field?}`), or a network failure (`status` 0). */
export class ApiError extends Error {
  status: number;
  code: string;
  field?: string;
  state?: SandboxState;

  constructor(status: number, body: Partial<ErrorBody> | undefined, fallback?: string) {
    super(body?.message ?? fallback ?? `request failed (HTTP ${status})`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.code ?? (status === 0 ? "network" : "http_error");
    this.field = body?.field ?? undefined;
    this.state = body?.state ?? undefined;
  }
}

/** The server's origin (the console is served by the server it talks to). */
export function apiBase(): string {
  return typeof window !== "undefined" ? window.location.origin : "http://localhost";
}

/** A client that sends `key` and calls `onUnauthorized` on a 401. */
export function makeClient(key: string | null, onUnauthorized?: () => void): Api {
  const client = createClient<paths>({ baseUrl: apiBase(), fetch: (r) => globalThis.fetch(r) });
  client.use({
    onRequest({ request }) {
      if (key) request.headers.set("Authorization", `Bearer ${key}`);
      return request;
    },
    onResponse({ response }) {
      if (response.status === 401 && onUnauthorized) onUnauthorized();
      return response;
    },
  });
  return client;
}

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The data of an answer, or its error as an [`ApiError`]. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  let r: Result<T>;
  try {
    r = await call;
  } catch (e) {
    throw new ApiError(0, undefined, `cannot reach the server: ${(e as Error).message}`);
  }
  if (!r.response.ok) {
    const body = typeof r.error === "object" && r.error !== null ? (r.error as ErrorBody) : undefined;
    throw new ApiError(r.response.status, body, typeof r.error === "string" ? r.error : undefined);
  }
  return r.data as T;
}

/** A raw fetch with the key, for streams and file contents; throws [`ApiError`] unless 2xx. */
export async function apiFetch(key: string | null, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let res: Response;
  try {
    res = await globalThis.fetch(`${apiBase()}${path}`, { ...init, headers });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, undefined, `cannot reach the server: ${(e as Error).message}`);
  }
  if (!res.ok) {
    let body: ErrorBody | undefined;
    try {
      body = (await res.json()) as ErrorBody;
    } catch {
      body = undefined;
    }
    throw new ApiError(res.status, body);
  }
  return res;
}

/** The message to show for any error. */
export function errorMessage(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** `GET /v1/billing/usage` as JSON (the operation also answers CSV, hence the narrowing). */
export function getUsage(api: Api, query: { from?: string; to?: string; project?: string }): Promise<UsageView> {
  return unwrap(api.GET("/v1/billing/usage", { params: { query } })) as Promise<UsageView>;
}

/** A non-streaming exec (the operation also streams NDJSON, hence the narrowing). */
export function execOnce(api: Api, id: string, body: Schemas["ExecRequest"]): Promise<ExecResult> {
  return unwrap(api.POST("/v1/sandboxes/{id}/exec", { params: { path: { id } }, body })) as Promise<ExecResult>;
}
