// Billing: a project's wallet and the spending breakdown by resource, sandbox, project and day.

import { useQuery } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { Link } from "react-router";
import { getUsage, unwrap } from "../api/client";
import { DayChart, ShareBars, fillDays } from "../components/BarChart";
import { ErrorBanner, Spinner } from "../components/common";
import { formatMoney, formatTime } from "../lib/format";
import { useProjects, useServerConfig } from "../queries";
import { useSession } from "../session";

const RANGES = [7, 30, 90] as const;

export function Billing() {
  const { api } = useSession();
  const config = useServerConfig();
  const projects = useProjects();
  const [project, setProject] = useState("");
  const [days, setDays] = useState<number>(30);
  useEffect(() => {
    const list = projects.data ?? [];
    if (project === "" && list.length > 0) setProject((list.find((p) => p.name === "default") ?? list[0]).name);
  }, [projects.data, project]);

  const wallet = useQuery({
    queryKey: ["wallet", project],
    queryFn: () => unwrap(api.GET("/v1/projects/{project}/wallet", { params: { path: { project } } })),
    enabled: project !== "",
    refetchInterval: 30_000,
  });
  const to = new Date();
  const fromDate = new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), to.getUTCDate() - (days - 1)));
  const from = fromDate.toISOString().slice(0, 10);
  const usage = useQuery({
    queryKey: ["usage", project, from],
    queryFn: () => getUsage(api, { from, project: project || undefined }),
    enabled: project !== "",
    refetchInterval: 30_000,
  });
  const u = usage.data;
  const currency = u?.currency ?? wallet.data?.currency ?? config.currency;

  return (
    <section>
      <nav className="breadcrumb" aria-label="Breadcrumb">
        <span>Billing</span>
      </nav>
      <div className="page-header">
        <h1>Billing</h1>
      </div>
      <div className="toolbar">
        <label>
          Project
          <select value={project} onChange={(e) => setProject(e.target.value)} aria-label="Project">
            {(projects.data ?? []).map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Period
          <select value={days} onChange={(e) => setDays(Number(e.target.value))} aria-label="Period">
            {RANGES.map((d) => (
              <option key={d} value={d}>
                Last {d} days
              </option>
            ))}
          </select>
        </label>
      </div>
      {projects.isPending && <Spinner />}
      {projects.data?.length === 0 && <p className="muted">You are not a member of any project yet.</p>}
      {projects.isError && <ErrorBanner error={projects.error} />}
      <div className="grid-3">
        <div className="card stat" data-testid="wallet">
          <h2>Wallet balance</h2>
          {wallet.isError ? (
            <ErrorBanner error={wallet.error} />
          ) : wallet.data ? (
            <>
              <p className={`big${wallet.data.low ? " low" : ""}`} data-testid="balance">
                {formatMoney(wallet.data.balance, wallet.data.currency, true)}
              </p>
              <p className="muted small">
                {wallet.data.low ? "Low balance: " : ""}alert below{" "}
                {formatMoney(wallet.data.low_threshold, wallet.data.currency)} · updated {formatTime(wallet.data.updated_at)}
              </p>
            </>
          ) : (
            <Spinner />
          )}
        </div>
        <div className="card stat">
          <h2>Burn rate</h2>
          <p className="big">{wallet.data ? `${formatMoney(wallet.data.burn_per_hour, currency)} / h` : "—"}</p>
          <p className="muted small">What this project's sandboxes cost per hour right now.</p>
        </div>
        <div className="card stat">
          <h2>Spent, last {days} days</h2>
          <p className="big" data-testid="total">
            {u ? formatMoney(u.total, currency) : "—"}
          </p>
          <p className="muted small">Metered per second: GPU, CPU and memory while running, disk while paused.</p>
        </div>
      </div>
      {usage.isError && <ErrorBanner error={usage.error} />}
      {u && (
        <>
          <div className="card">
            <h2>By day</h2>
            <DayChart bars={fillDays(u.by_day, u.from, u.to)} currency={currency} title="Spending per day" />
          </div>
          <div className="grid-2">
            <div className="card">
              <h2>By resource</h2>
              {Object.keys(u.by_resource).length === 0 ? (
                <p className="muted">Nothing spent in this period.</p>
              ) : (
                <ShareBars
                  label="Spending by resource"
                  currency={currency}
                  bars={Object.entries(u.by_resource).map(([label, v]) => ({ label, value: Number(v) }))}
                />
              )}
            </div>
            <div className="card">
              <h2>By project</h2>
              {Object.keys(u.by_project).length === 0 ? (
                <p className="muted">Nothing spent in this period.</p>
              ) : (
                <ShareBars
                  label="Spending by project"
                  currency={currency}
                  bars={Object.entries(u.by_project).map(([label, v]) => ({ label, value: Number(v) }))}
                />
              )}
            </div>
          </div>
          <div className="card">
            <h2>By sandbox</h2>
            {u.by_sandbox.length === 0 ? (
              <p className="muted">Nothing spent in this period.</p>
            ) : (
              <table className="table responsive">
                <thead>
                  <tr>
                    <th>Sandbox</th>
                    <th>Project</th>
                    <th className="num">Spent</th>
                  </tr>
                </thead>
                <tbody>
                  {[...u.by_sandbox]
                    .sort((a, b) => Number(b.amount) - Number(a.amount))
                    .map((s) => (
                      <tr key={s.sandbox}>
                        <td data-label="Sandbox">
                          {config.features.sandbox ? (
                            <Link to={`/sandboxes/${s.sandbox}`}>{s.name ?? s.sandbox}</Link>
                          ) : (
                            (s.name ?? s.sandbox)
                          )}
                        </td>
                        <td data-label="Project">{s.project}</td>
                        <td data-label="Spent" className="num">
                          {formatMoney(s.amount, currency)}
                        </td>
                      </tr>
                    ))}
                </tbody>
              </table>
            )}
          </div>
        </>
      )}
    </section>
  );
}
