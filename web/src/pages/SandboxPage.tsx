// One sandbox: its details and actions, time left with an extend action, the failure reason,
// and tabs for live logs, a terminal, files and the state history.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { unwrap, type Sandbox } from "../api/client";
import { ErrorBanner, Spinner, StateBadge, isActive, useNow } from "../components/common";
import { formatDuration, formatGpu, formatTime } from "../lib/format";
import { checkTimeout } from "../lib/validate";
import { useServerConfig } from "../queries";
import { useSession } from "../session";
import { EventsPanel } from "./sandbox/EventsPanel";
import { FileBrowser } from "./sandbox/FileBrowser";
import { LogsPanel } from "./sandbox/LogsPanel";
import { TerminalPanel } from "./sandbox/TerminalPanel";
import { ActionButtons, actionError, displayName, useSandboxAction, type Action } from "./sandboxActions";

const TABS = ["logs", "terminal", "files", "history"] as const;
type Tab = (typeof TABS)[number];
const TAB_LABEL: Record<Tab, string> = { logs: "Logs", terminal: "Terminal", files: "Files", history: "History" };

/** Seconds of running time left now, or undefined when it has ended. */
export function secondsLeft(s: Sandbox, now: number): number | undefined {
  if (s.state === "running" && s.ends_at) return Math.max(0, (Date.parse(s.ends_at) - now) / 1000);
  if (s.state === "paused" && s.remaining_s != null) return s.remaining_s;
  if (s.state === "provisioning") return s.timeout_s;
  return undefined;
}

export function SandboxPage() {
  const { id = "" } = useParams();
  const { api } = useSession();
  const queries = useQueryClient();
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const tab = (TABS as readonly string[]).includes(params.get("tab") ?? "") ? (params.get("tab") as Tab) : "logs";
  const [opened, setOpened] = useState<Set<Tab>>(new Set([tab]));
  const [actionErr, setActionErr] = useState<string>();
  const action = useSandboxAction();
  const sandbox = useQuery({
    queryKey: ["sandboxes", "one", id],
    queryFn: () => unwrap(api.GET("/v1/sandboxes/{id}", { params: { path: { id } } })),
    refetchInterval: (q) => (q.state.data && isActive(q.state.data.state) ? 10_000 : false),
  });

  if (sandbox.isPending) return <Spinner />;
  if (sandbox.isError) {
    return (
      <section>
        <nav className="breadcrumb" aria-label="Breadcrumb">
          <Link to="/sandboxes">Sandboxes</Link> <span aria-hidden="true">›</span> <span>{id}</span>
        </nav>
        <ErrorBanner error={sandbox.error} />
      </section>
    );
  }
  const s = sandbox.data;
  const running = s.state === "running";

  function selectTab(t: Tab) {
    setOpened((o) => new Set([...o, t]));
    const next = new URLSearchParams(params);
    next.set("tab", t);
    setParams(next, { replace: true });
  }

  function run(a: Action) {
    setActionErr(undefined);
    action.mutate(
      { sandbox: s, action: a },
      {
        onSuccess: () => {
          if (a === "delete") navigate("/sandboxes");
        },
        onError: (e) => setActionErr(actionError(a, s, e)),
      },
    );
  }

  return (
    <section>
      <nav className="breadcrumb" aria-label="Breadcrumb">
        <Link to="/sandboxes">Sandboxes</Link> <span aria-hidden="true">›</span> <span>{displayName(s)}</span>
      </nav>
      <div className="page-header">
        <h1>
          {displayName(s)} <StateBadge state={s.state} />
        </h1>
        <ActionButtons sandbox={s} busy={action.isPending} onAction={run} />
      </div>
      {actionErr && <ErrorBanner error={actionErr} onDismiss={() => setActionErr(undefined)} />}
      {s.state === "failed" && (
        <div className="alert alert-error" role="alert" data-testid="failure">
          <strong>This sandbox failed.</strong> Reason: <span className="reason">{s.state_reason ?? "unknown"}</span>
          {s.exit_code != null && <> · exit code {s.exit_code}</>}. Its logs are below.
        </div>
      )}
      {s.state === "terminated" && (
        <div className="alert" role="status">
          Terminated{s.state_reason ? `: ${s.state_reason}` : ""}
          {s.exit_code != null && ` (exit code ${s.exit_code})`}
          {s.terminated_at && ` at ${formatTime(s.terminated_at)}`}.
        </div>
      )}
      <div className="grid-2">
        <div className="card">
          <h2>Details</h2>
          <dl className="details">
            <dt>ID</dt>
            <dd className="mono">{s.id}</dd>
            <dt>Project</dt>
            <dd>{s.project}</dd>
            <dt>Image</dt>
            <dd className="mono wrap">{s.image}</dd>
            <dt>CPU · memory</dt>
            <dd>
              {s.cpu} · {s.memory}
            </dd>
            <dt>GPU</dt>
            <dd>{formatGpu(s.gpu)}</dd>
            <dt>Created</dt>
            <dd>{formatTime(s.created_at)}</dd>
            {s.started_at && (
              <>
                <dt>Started</dt>
                <dd>{formatTime(s.started_at)}</dd>
              </>
            )}
            {s.paused_at && (
              <>
                <dt>Paused</dt>
                <dd>{formatTime(s.paused_at)}</dd>
              </>
            )}
          </dl>
        </div>
        <TimeoutCard sandbox={s} onUpdated={(v) => queries.setQueryData(["sandboxes", "one", id], v)} />
      </div>
      <div className="tabs" role="tablist" aria-label="Sandbox views">
        {TABS.map((t) => (
          <button
            key={t}
            type="button"
            role="tab"
            id={`tab-${t}`}
            aria-selected={tab === t}
            aria-controls={`panel-${t}`}
            className={tab === t ? "active" : ""}
            onClick={() => selectTab(t)}
          >
            {TAB_LABEL[t]}
          </button>
        ))}
      </div>
      <div className="card tab-panel" role="tabpanel" id="panel-logs" aria-labelledby="tab-logs" hidden={tab !== "logs"}>
        <LogsPanel sandboxId={s.id} />
      </div>
      <div
        className="card tab-panel"
        role="tabpanel"
        id="panel-terminal"
        aria-labelledby="tab-terminal"
        hidden={tab !== "terminal"}
      >
        {running ? (
          opened.has("terminal") && <TerminalPanel sandboxId={s.id} visible={tab === "terminal"} />
        ) : (
          <p className="muted">The terminal works while the sandbox is running.</p>
        )}
      </div>
      <div className="card tab-panel" role="tabpanel" id="panel-files" aria-labelledby="tab-files" hidden={tab !== "files"}>
        {running ? (
          tab === "files" && <FileBrowser sandboxId={s.id} />
        ) : (
          <p className="muted">Files can be browsed while the sandbox is running.</p>
        )}
      </div>
      <div
        className="card tab-panel"
        role="tabpanel"
        id="panel-history"
        aria-labelledby="tab-history"
        hidden={tab !== "history"}
      >
        <EventsPanel
          sandboxId={s.id}
          onState={() => void queries.invalidateQueries({ queryKey: ["sandboxes"] })}
        />
      </div>
    </section>
  );
}

function TimeoutCard({ sandbox, onUpdated }: { sandbox: Sandbox; onUpdated: (s: Sandbox) => void }) {
  const { api } = useSession();
  const { limits } = useServerConfig();
  const now = useNow();
  const queries = useQueryClient();
  const [custom, setCustom] = useState("");
  const left = secondsLeft(sandbox, now);
  const set = useMutation({
    mutationFn: (timeout_s: number) =>
      unwrap(api.POST("/v1/sandboxes/{id}/timeout", { params: { path: { id: sandbox.id } }, body: { timeout_s } })),
    onSuccess: (v) => {
      onUpdated(v);
      setCustom("");
      void queries.invalidateQueries({ queryKey: ["sandboxes", "list"] });
    },
  });
  const customError = custom === "" ? undefined : checkTimeout(custom, limits, "time left");
  const extend = (by: number) => set.mutate(Math.min(limits.timeout_max_s, Math.ceil(left ?? 0) + by));
  return (
    <div className="card">
      <h2>Time left</h2>
      {left === undefined ? (
        <p className="muted">Ended.</p>
      ) : (
        <>
          <p className="countdown" data-testid="time-left">
            {formatDuration(left)}
            {sandbox.state === "paused" && <span className="muted small"> (paused: the clock is stopped)</span>}
          </p>
          <p className="muted small">
            {sandbox.state === "running" && sandbox.ends_at && `Ends itself at ${formatTime(sandbox.ends_at)}. `}
            Timeout {sandbox.timeout_s} s.
          </p>
          <div className="actions">
            <button type="button" onClick={() => extend(15 * 60)} disabled={set.isPending}>
              Extend +15 min
            </button>
            <button type="button" onClick={() => extend(3600)} disabled={set.isPending}>
              Extend +1 hour
            </button>
          </div>
          <form
            className="inline-form"
            onSubmit={(e) => {
              e.preventDefault();
              if (custom !== "" && !customError) set.mutate(Number(custom));
            }}
          >
            <label htmlFor="time-left-input">Set time left (seconds)</label>
            <div className="row-tight">
              <input
                id="time-left-input"
                inputMode="numeric"
                value={custom}
                onChange={(e) => setCustom(e.target.value)}
                aria-invalid={customError ? true : undefined}
                aria-describedby={customError ? "time-left-error" : undefined}
              />
              <button type="submit" disabled={custom === "" || !!customError || set.isPending}>
                Set
              </button>
            </div>
            {customError && (
              <p className="field-error" id="time-left-error" role="alert">
                {customError}
              </p>
            )}
          </form>
          {set.isError && (
            <ErrorBanner error={set.error} onDismiss={() => set.reset()} />
          )}
        </>
      )}
    </div>
  );
}
