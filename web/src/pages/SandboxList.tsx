// Sandboxes: the list with filters and actions. It refreshes every 10 s while any sandbox is
// active (provisioning or running) and stops polling when none is.

import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useSearchParams } from "react-router";
import { getUsage, unwrap, type Sandbox, type SandboxState } from "../api/client";
import { ErrorBanner, STATES, Spinner, StateBadge, isActive, stateLabel, useNow } from "../components/common";
import { formatAge, formatDuration, formatGpu, formatMoney } from "../lib/format";
import { useProjects, useServerConfig } from "../queries";
import { useSession } from "../session";
import { ActionButtons, actionError, displayName, useSandboxAction, type Action } from "./sandboxActions";

export const POLL_MS = 10_000;

/** How often the list refreshes: every 10 s while any sandbox is active, else never. */
export function pollInterval(items: Sandbox[] | undefined): number | false {
  return items?.some((s) => isActive(s.state)) ? POLL_MS : false;
}

/** Running time left: counting down while running, frozen while paused. */
export function timeLeft(s: Sandbox, now: number): string {
  if (s.state === "running" && s.ends_at) return formatDuration((Date.parse(s.ends_at) - now) / 1000);
  if (s.state === "paused" && s.remaining_s != null) return `${formatDuration(s.remaining_s)} (paused)`;
  if (s.state === "provisioning") return formatDuration(s.timeout_s);
  return "—";
}

const MAX_USAGE_DAYS = 399;

export function SandboxList() {
  const { api } = useSession();
  const config = useServerConfig();
  const projects = useProjects();
  const [params, setParams] = useSearchParams();
  const project = params.get("project") ?? "";
  const state = (params.get("state") ?? "") as SandboxState | "";
  const now = useNow();
  const [actionErr, setActionErr] = useState<string>();
  const action = useSandboxAction();

  const list = useQuery({
    queryKey: ["sandboxes", "list", project, state],
    queryFn: () =>
      unwrap(
        api.GET("/v1/sandboxes", {
          params: { query: { project: project || undefined, state: state || undefined, limit: 200 } },
        }),
      ),
    refetchInterval: (q) => pollInterval(q.state.data?.items),
  });
  const items = list.data?.items ?? [];
  const oldest = items.reduce<number>((m, s) => Math.min(m, Date.parse(s.created_at)), Date.now());
  const from = new Date(Math.max(oldest - 60_000, Date.now() - MAX_USAGE_DAYS * 86400_000)).toISOString();
  const usage = useQuery({
    queryKey: ["sandboxes", "usage", project, from.slice(0, 10)],
    queryFn: () => getUsage(api, { from, project: project || undefined }),
    enabled: items.length > 0,
    refetchInterval: () => pollInterval(list.data?.items),
  });
  const cost = new Map((usage.data?.by_sandbox ?? []).map((u) => [u.sandbox, u.amount]));
  const currency = usage.data?.currency ?? config.currency;
  const polling = pollInterval(items) !== false;

  function setFilter(name: string, value: string) {
    const next = new URLSearchParams(params);
    if (value) next.set(name, value);
    else next.delete(name);
    setParams(next, { replace: true });
  }

  function run(sandbox: Sandbox, a: Action) {
    setActionErr(undefined);
    action.mutate({ sandbox, action: a }, { onError: (e) => setActionErr(actionError(a, sandbox, e)) });
  }

  return (
    <section>
      <nav className="breadcrumb" aria-label="Breadcrumb">
        <span>Sandboxes</span>
      </nav>
      <div className="page-header">
        <h1>Sandboxes</h1>
        <Link to="/sandboxes/new" className="button primary">
          Create Sandbox
        </Link>
      </div>
      <div className="toolbar">
        <label>
          Project
          <select value={project} onChange={(e) => setFilter("project", e.target.value)} aria-label="Project filter">
            <option value="">All projects</option>
            {(projects.data ?? []).map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          State
          <select value={state} onChange={(e) => setFilter("state", e.target.value)} aria-label="State filter">
            <option value="">All states</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {stateLabel(s)}
              </option>
            ))}
          </select>
        </label>
        <span className="muted small refresh-status" data-polling={polling}>
          {polling ? "Refreshing every 10 s" : "Not refreshing: no sandbox is active"}
          {list.dataUpdatedAt > 0 && ` · updated ${new Date(list.dataUpdatedAt).toLocaleTimeString("en-GB")}`}
        </span>
        <button type="button" className="link" onClick={() => list.refetch()} disabled={list.isFetching}>
          Refresh
        </button>
      </div>
      {actionErr && <ErrorBanner error={actionErr} onDismiss={() => setActionErr(undefined)} />}
      {list.isError && <ErrorBanner error={list.error} />}
      {list.isPending ? (
        <Spinner />
      ) : items.length === 0 ? (
        <div className="empty card">
          <p>{project || state ? "No sandbox matches these filters." : "No sandboxes yet."}</p>
          <Link to="/sandboxes/new">Create a sandbox</Link>
        </div>
      ) : (
        <table className="table responsive sandboxes">
          <thead>
            <tr>
              <th>Name</th>
              <th>State</th>
              <th>GPU</th>
              <th>Image</th>
              <th>Project</th>
              <th>Age</th>
              <th>Time left</th>
              <th>Cost so far</th>
              <th>
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((s) => (
              <tr key={s.id} data-sandbox={s.id} data-name={s.name ?? ""}>
                <td data-label="Name">
                  <div>
                    <Link to={`/sandboxes/${s.id}`} className="strong">
                      {displayName(s)}
                    </Link>
                    <div className="mono muted small">{s.id}</div>
                  </div>
                </td>
                <td data-label="State">
                  <StateBadge state={s.state} />
                </td>
                <td data-label="GPU">{formatGpu(s.gpu)}</td>
                <td data-label="Image" className="mono small wrap">
                  {s.image}
                </td>
                <td data-label="Project">{s.project}</td>
                <td data-label="Age">{formatAge(s.created_at, now)}</td>
                <td data-label="Time left" className="time-left">
                  {timeLeft(s, now)}
                </td>
                <td data-label="Cost so far">{formatMoney(cost.get(s.id) ?? "0", currency)}</td>
                <td data-label="Actions">
                  <ActionButtons
                    sandbox={s}
                    busy={action.isPending && action.variables?.sandbox.id === s.id}
                    onAction={(a) => run(s, a)}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {list.data?.next_cursor && <p className="muted small">Showing the 200 newest sandboxes.</p>}
    </section>
  );
}
