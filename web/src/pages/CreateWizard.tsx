// Sandboxes › Create Sandbox: three steps (GPU, image, configuration) and a review with the
// hourly estimate. Fields are checked as they are typed with the API's rules; errors the API
// answers are shown next to the field they name.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useState, type ReactNode } from "react";
import { Link, useNavigate } from "react-router";
import { ApiError, unwrap, type CuratedImage, type GpuType } from "../api/client";
import { ErrorBanner, FieldError, Spinner } from "../components/common";
import { formatDuration, formatGpu, formatMoney } from "../lib/format";
import { GPU_FRACTIONS, type Limits } from "../lib/validate";
import {
  STEPS,
  createBody,
  defaultCurated,
  freeFor,
  gpuRequest,
  initialDraft,
  localField,
  stepErrors,
  stepOf,
  validateDraft,
  type Draft,
  type Errors,
  type Fraction,
} from "../lib/wizard";
import { useMe, useProjects, useServerConfig } from "../queries";
import { useSession } from "../session";
import { KycPrompt } from "./KycPrompt";

export function CreateSandboxPage() {
  const me = useMe();
  return (
    <section>
      <nav className="breadcrumb" aria-label="Breadcrumb">
        <Link to="/sandboxes">Sandboxes</Link> <span aria-hidden="true">›</span> <span>Create Sandbox</span>
      </nav>
      <h1>Create Sandbox</h1>
      {me.isPending ? (
        <Spinner />
      ) : me.isError ? (
        <ErrorBanner error={me.error} />
      ) : me.data.user.kyc !== "verified" ? (
        <KycPrompt />
      ) : (
        <Wizard />
      )}
    </section>
  );
}

interface FieldProps {
  id: string;
  label: string;
  hint?: ReactNode;
  error?: string;
  children: (aria: { id: string; "aria-invalid"?: boolean; "aria-describedby"?: string }) => ReactNode;
}

function Field({ id, label, hint, error, children }: FieldProps) {
  const described = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean).join(" ");
  return (
    <div className={`field${error ? " has-error" : ""}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, "aria-invalid": error ? true : undefined, "aria-describedby": described || undefined })}
      {hint && (
        <p className="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      <FieldError id={`${id}-error`} message={error} />
    </div>
  );
}

export function Wizard() {
  const { api } = useSession();
  const config = useServerConfig();
  const limits: Limits = config.limits;
  const navigate = useNavigate();
  const queries = useQueryClient();
  const [draft, setDraft] = useState<Draft>(() => initialDraft(limits));
  const [step, setStep] = useState(0);
  const [visited, setVisited] = useState(0);
  const [touched, setTouched] = useState<Set<string>>(new Set());
  const [attempted, setAttempted] = useState<Set<number>>(new Set());
  const [serverErrors, setServerErrors] = useState<Errors>({});
  const [banner, setBanner] = useState<unknown>();

  const gpus = useQuery({ queryKey: ["gpus"], queryFn: () => unwrap(api.GET("/v1/gpus")) });
  const images = useQuery({ queryKey: ["images"], queryFn: () => unwrap(api.GET("/v1/images")) });
  const projects = useProjects();

  useEffect(() => {
    if (images.data && draft.curated === "") {
      const name = defaultCurated(images.data.curated, config.default_image);
      if (name) setDraft((d) => (d.curated === "" ? { ...d, curated: name } : d));
    }
  }, [images.data, config.default_image, draft.curated]);
  useEffect(() => {
    const list = projects.data ?? [];
    if (list.length > 0 && draft.project === "") {
      const p = list.find((x) => x.name === "default") ?? list[0];
      setDraft((d) => (d.project === "" ? { ...d, project: p.name } : d));
    }
  }, [projects.data, draft.project]);

  const errors = useMemo(() => validateDraft(draft, limits), [draft, limits]);
  const shown = (field: string): string | undefined =>
    serverErrors[field] ?? (touched.has(field) || attempted.has(stepOf(field)) ? errors[field] : undefined);

  function update(fields: string[], patch: Partial<Draft>) {
    setDraft((d) => ({ ...d, ...patch }));
    setTouched((t) => new Set([...t, ...fields]));
    setServerErrors((e) => {
      const next = { ...e };
      for (const f of fields) delete next[f];
      if (fields.some((f) => f.startsWith("gpu"))) delete next.gpu;
      return next;
    });
  }

  function goTo(s: number) {
    setStep(s);
    setVisited((v) => Math.max(v, s));
  }

  function next() {
    if (stepErrors(errors, step).length > 0) {
      setAttempted((a) => new Set([...a, step]));
      return;
    }
    goTo(step + 1);
  }

  const estimate = useQuery({
    queryKey: ["estimate", draft.cpu, draft.memory, draft.gpuType, draft.gpuCount, draft.gpuFraction],
    queryFn: () =>
      unwrap(
        api.POST("/v1/estimate", {
          body: { cpu: draft.cpu.trim(), memory: draft.memory.trim(), gpu: gpuRequest(draft) },
        }),
      ),
    enabled: step === 3 && Object.keys(errors).length === 0,
  });

  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/v1/sandboxes", { body: createBody(draft) })),
    onSuccess: (sandbox) => {
      void queries.invalidateQueries({ queryKey: ["sandboxes"] });
      navigate(`/sandboxes/${sandbox.id}`);
    },
    onError: (e) => {
      if (e instanceof ApiError && e.field) {
        const f = localField(e.field, draft);
        setServerErrors({ [f]: e.message });
        goTo(stepOf(f));
      } else if (e instanceof ApiError && e.code === "no_gpu_capacity") {
        setServerErrors({ gpu: e.message });
        goTo(0);
      } else {
        if (e instanceof ApiError && e.code === "kyc_required") void queries.invalidateQueries({ queryKey: ["me"] });
        setBanner(e);
      }
    },
  });

  function submit() {
    setBanner(undefined);
    if (Object.keys(errors).length > 0) {
      const first = Math.min(...Object.keys(errors).map(stepOf));
      setAttempted(new Set([0, 1, 2]));
      goTo(first);
      return;
    }
    create.mutate();
  }

  return (
    <div className="wizard">
      <ol className="steps" aria-label="Steps">
        {STEPS.map((name, i) => (
          <li key={name} className={i === step ? "current" : i < step ? "done" : ""}>
            <button
              type="button"
              className="step-button"
              onClick={() => goTo(i)}
              disabled={i > visited}
              aria-current={i === step ? "step" : undefined}
            >
              <span className="step-number">{i + 1}</span> {name}
              {i < 3 && stepErrors(serverErrors, i).length > 0 && <span className="step-error"> !</span>}
            </button>
          </li>
        ))}
      </ol>
      <div className="card wizard-body">
        {step === 0 && (
          <GpuStep
            draft={draft}
            gpus={gpus.data}
            loading={gpus.isPending}
            loadError={gpus.error}
            update={update}
            countError={shown("gpu.count")}
            capacityError={serverErrors.gpu ?? serverErrors["gpu.type"] ?? serverErrors["gpu.fraction"]}
          />
        )}
        {step === 1 && (
          <ImageStep
            draft={draft}
            images={images.data?.curated}
            loading={images.isPending}
            loadError={images.error}
            update={update}
            shown={shown}
          />
        )}
        {step === 2 && (
          <ConfigStep
            draft={draft}
            limits={limits}
            projects={(projects.data ?? []).map((p) => p.name)}
            update={update}
            shown={shown}
          />
        )}
        {step === 3 && (
          <Review
            draft={draft}
            estimate={estimate.data}
            estimateError={estimate.error}
            estimating={estimate.isFetching}
          />
        )}
        {banner !== undefined && <ErrorBanner error={banner} onDismiss={() => setBanner(undefined)} />}
        <div className="wizard-nav">
          {step > 0 ? (
            <button type="button" onClick={() => goTo(step - 1)}>
              Back
            </button>
          ) : (
            <Link to="/sandboxes" className="button">
              Cancel
            </Link>
          )}
          {step < 3 ? (
            <button type="button" className="primary" onClick={next}>
              Next
            </button>
          ) : (
            <button type="button" className="primary" onClick={submit} disabled={create.isPending}>
              {create.isPending ? "Creating…" : "Create Sandbox"}
            </button>
          )}
        </div>
      </div>
    </div>
  );
}

type Update = (fields: string[], patch: Partial<Draft>) => void;

function GpuStep(props: {
  draft: Draft;
  gpus?: GpuType[];
  loading: boolean;
  loadError: unknown;
  update: Update;
  countError?: string;
  capacityError?: string;
}) {
  const { draft, gpus, update } = props;
  const selected = gpus?.find((g) => g.type === draft.gpuType);
  const free = selected ? freeFor(selected, draft.gpuFraction) : 0;
  const count = Number(draft.gpuCount) || 0;
  return (
    <fieldset>
      <legend>GPU</legend>
      <p className="muted">A whole GPU, or a 25/50/75 % share of one. Free now, on this server:</p>
      {props.loading && <Spinner label="Loading GPUs…" />}
      {props.loadError !== null && <ErrorBanner error={props.loadError} />}
      <div className="choices" role="radiogroup" aria-label="GPU type">
        <label className={`choice${draft.gpuType === null ? " selected" : ""}`}>
          <input
            type="radio"
            name="gpu"
            value="none"
            checked={draft.gpuType === null}
            onChange={() => update(["gpu.count", "gpu.type"], { gpuType: null })}
          />
          <span className="choice-title">No GPU</span>
          <span className="muted small">CPU and memory only</span>
        </label>
        {(gpus ?? []).map((g) => (
          <label key={g.type} className={`choice${draft.gpuType === g.type ? " selected" : ""}`}>
            <input
              type="radio"
              name="gpu"
              value={g.type}
              checked={draft.gpuType === g.type}
              onChange={() => update(["gpu.type"], { gpuType: g.type })}
            />
            <span className="choice-title">
              {g.type} {g.simulated && <span className="tag">simulated</span>}
            </span>
            <span className="small">{g.memory} memory · {g.total} in all</span>
            <span className="muted small">
              free: {g.free_whole} whole · {g.free_75}×75% · {g.free_50}×50% · {g.free_25}×25%
            </span>
          </label>
        ))}
      </div>
      {gpus && gpus.length === 0 && <p className="muted">This server has no GPUs.</p>}
      {selected && (
        <div className="row">
          <div className="field narrow">
            <label htmlFor="gpu-count">Count</label>
            <input
              id="gpu-count"
              inputMode="numeric"
              value={draft.gpuCount}
              onChange={(e) => update(["gpu.count"], { gpuCount: e.target.value })}
              aria-invalid={props.countError ? true : undefined}
              aria-describedby={props.countError ? "gpu-count-error" : undefined}
            />
            <FieldError id="gpu-count-error" message={props.countError} />
          </div>
          <fieldset className="field share">
            <legend>Share of each GPU</legend>
            <div className="segmented" role="radiogroup" aria-label="Share of each GPU">
              {GPU_FRACTIONS.map((f) => (
                <label key={f} className={draft.gpuFraction === f ? "selected" : ""}>
                  <input
                    type="radio"
                    name="fraction"
                    value={f}
                    checked={draft.gpuFraction === f}
                    onChange={() => update(["gpu.fraction"], { gpuFraction: f as Fraction })}
                  />
                  {f} % <span className="muted small">({freeFor(selected, f as Fraction)} free)</span>
                </label>
              ))}
            </div>
          </fieldset>
        </div>
      )}
      {selected && count > free && (
        <p className="warning" role="status">
          Only {free} {draft.gpuFraction === 100 ? "whole" : `${draft.gpuFraction} %`} {selected.type} free right now:
          the create will be refused unless capacity frees up.
        </p>
      )}
      <FieldError id="gpu-error" message={props.capacityError} />
    </fieldset>
  );
}

function imageBadge(i: CuratedImage): string {
  if (i.available) return "ready";
  if (i.build) return `build first: sandpit image build ${i.build}`;
  return "pulled on first use";
}

function ImageStep(props: {
  draft: Draft;
  images?: CuratedImage[];
  loading: boolean;
  loadError: unknown;
  update: Update;
  shown: (f: string) => string | undefined;
}) {
  const { draft, update, shown } = props;
  const byCategory = new Map<string, CuratedImage[]>();
  for (const i of props.images ?? []) byCategory.set(i.category, [...(byCategory.get(i.category) ?? []), i]);
  return (
    <fieldset>
      <legend>Image</legend>
      <div className="segmented" role="radiogroup" aria-label="Image source">
        <label className={draft.imageMode === "curated" ? "selected" : ""}>
          <input
            type="radio"
            name="image-mode"
            checked={draft.imageMode === "curated"}
            onChange={() => update(["image", "image.password"], { imageMode: "curated" })}
          />
          Curated image
        </label>
        <label className={draft.imageMode === "custom" ? "selected" : ""}>
          <input
            type="radio"
            name="image-mode"
            checked={draft.imageMode === "custom"}
            onChange={() => update([], { imageMode: "custom" })}
          />
          Custom image
        </label>
      </div>
      {draft.imageMode === "curated" ? (
        <>
          {props.loading && <Spinner label="Loading images…" />}
          {props.loadError !== null && <ErrorBanner error={props.loadError} />}
          {[...byCategory.entries()].map(([category, list]) => (
            <div key={category} className="category">
              <h3>{category}</h3>
              <div className="choices" role="radiogroup" aria-label={`${category} images`}>
                {list.map((i) => {
                  const usable = i.available || !i.build;
                  return (
                    <label
                      key={i.name}
                      className={`choice${draft.curated === i.name ? " selected" : ""}${usable ? "" : " disabled"}`}
                    >
                      <input
                        type="radio"
                        name="curated"
                        value={i.name}
                        disabled={!usable}
                        checked={draft.curated === i.name}
                        onChange={() => update(["image"], { curated: i.name })}
                      />
                      <span className="choice-title">
                        {i.name} {i.gpu && <span className="tag">GPU</span>}
                      </span>
                      <span className="small">{i.description}</span>
                      <span className="mono muted small wrap">{i.reference}</span>
                      <span className="muted small">{imageBadge(i)}</span>
                    </label>
                  );
                })}
              </div>
            </div>
          ))}
          <FieldError id="image-error" message={shown("image")} />
        </>
      ) : (
        <>
          <Field
            id="image-ref"
            label="Image URI"
            hint="Any registry reference, e.g. docker.io/library/python:3.12"
            error={shown("image")}
          >
            {(aria) => (
              <input
                {...aria}
                value={draft.custom}
                autoComplete="off"
                spellCheck={false}
                placeholder="registry.example.com/team/app:1"
                onChange={(e) => update(["image"], { custom: e.target.value })}
              />
            )}
          </Field>
          <div className="row">
            <Field id="registry-username" label="Registry username (optional)">
              {(aria) => (
                <input
                  {...aria}
                  value={draft.username}
                  autoComplete="off"
                  onChange={(e) => update(["image.password", "image.username"], { username: e.target.value })}
                />
              )}
            </Field>
            <Field
              id="registry-password"
              label="Registry password (optional)"
              hint="Encrypted at rest and never shown again."
              error={shown("image.password")}
            >
              {(aria) => (
                <input
                  {...aria}
                  type="password"
                  autoComplete="new-password"
                  value={draft.password}
                  onChange={(e) => update(["image.password"], { password: e.target.value })}
                />
              )}
            </Field>
          </div>
        </>
      )}
    </fieldset>
  );
}

function ConfigStep(props: {
  draft: Draft;
  limits: Limits;
  projects: string[];
  update: Update;
  shown: (f: string) => string | undefined;
}) {
  const { draft, limits, update, shown } = props;
  const timeout = Number(draft.timeout);
  const setEnv = (i: number, patch: Partial<{ key: string; value: string }>) => {
    const env = draft.env.map((r, j) => (j === i ? { ...r, ...patch } : r));
    update([`env.${i}`, "env"], { env });
  };
  return (
    <fieldset>
      <legend>Configuration</legend>
      <div className="row">
        <Field id="cpu" label="CPU" hint={`cores: 1, 0.5 or 500m (up to ${limits.cpu_max})`} error={shown("cpu")}>
          {(aria) => (
            <input {...aria} value={draft.cpu} onChange={(e) => update(["cpu"], { cpu: e.target.value })} />
          )}
        </Field>
        <Field
          id="memory"
          label="Memory"
          hint={`2Gi or 512Mi (${limits.memory_min} to ${limits.memory_max})`}
          error={shown("memory")}
        >
          {(aria) => (
            <input {...aria} value={draft.memory} onChange={(e) => update(["memory"], { memory: e.target.value })} />
          )}
        </Field>
        <Field
          id="timeout"
          label="Timeout (seconds)"
          hint={
            Number.isFinite(timeout) && timeout > 0
              ? `ends itself after ${formatDuration(timeout)} of running time`
              : `${limits.timeout_min_s} to ${limits.timeout_max_s}`
          }
          error={shown("timeout_s")}
        >
          {(aria) => (
            <input
              {...aria}
              inputMode="numeric"
              value={draft.timeout}
              onChange={(e) => update(["timeout_s"], { timeout: e.target.value })}
            />
          )}
        </Field>
      </div>
      <div className="row">
        <Field id="name" label="Name (optional)" hint="a-z, 0-9 and '-'" error={shown("name")}>
          {(aria) => (
            <input
              {...aria}
              value={draft.name}
              autoComplete="off"
              spellCheck={false}
              onChange={(e) => update(["name"], { name: e.target.value })}
            />
          )}
        </Field>
        <Field id="project" label="Project" error={shown("project")}>
          {(aria) => (
            <select {...aria} value={draft.project} onChange={(e) => update(["project"], { project: e.target.value })}>
              {props.projects.length === 0 && <option value="">Your default project</option>}
              {props.projects.map((p) => (
                <option key={p} value={p}>
                  {p}
                </option>
              ))}
            </select>
          )}
        </Field>
      </div>
      <fieldset className="env">
        <legend>Environment variables</legend>
        {draft.env.map((row, i) => {
          const err = shown(`env.${i}`);
          return (
            <div key={i} className={`env-row${err ? " has-error" : ""}`}>
              <input
                aria-label={`Variable ${i + 1} name`}
                placeholder="NAME"
                className="mono"
                value={row.key}
                spellCheck={false}
                onChange={(e) => setEnv(i, { key: e.target.value })}
                aria-invalid={err ? true : undefined}
                aria-describedby={err ? `env-${i}-error` : undefined}
              />
              <input
                aria-label={`Variable ${i + 1} value`}
                placeholder="value"
                className="mono"
                value={row.value}
                spellCheck={false}
                onChange={(e) => setEnv(i, { value: e.target.value })}
              />
              <button
                type="button"
                className="link"
                aria-label={`Remove variable ${i + 1}`}
                onClick={() => {
                  const env = draft.env.filter((_, j) => j !== i);
                  update(["env"], { env: env.length > 0 ? env : [{ key: "", value: "" }] });
                }}
              >
                Remove
              </button>
              <FieldError id={`env-${i}-error`} message={err} />
            </div>
          );
        })}
        <FieldError id="env-error" message={shown("env")} />
        <button type="button" onClick={() => update([], { env: [...draft.env, { key: "", value: "" }] })}>
          Add variable
        </button>
      </fieldset>
    </fieldset>
  );
}

function Review(props: {
  draft: Draft;
  estimate?: { currency: string; running_per_hour: string; paused_per_hour: string; gpu_per_hour: string };
  estimateError: unknown;
  estimating: boolean;
}) {
  const { draft, estimate } = props;
  const env = draft.env.filter((r) => r.key !== "");
  const image =
    draft.imageMode === "curated"
      ? draft.curated
      : `${draft.custom}${draft.username ? ` (registry user ${draft.username}, password set)` : ""}`;
  return (
    <div>
      <h2>Review</h2>
      <dl className="details review">
        <dt>GPU</dt>
        <dd>{draft.gpuType ? formatGpu(gpuRequest(draft)) : "No GPU"}</dd>
        <dt>Image</dt>
        <dd className="mono wrap">{image}</dd>
        <dt>CPU</dt>
        <dd>{draft.cpu}</dd>
        <dt>Memory</dt>
        <dd>{draft.memory}</dd>
        <dt>Timeout</dt>
        <dd>
          {draft.timeout} s ({formatDuration(Number(draft.timeout))})
        </dd>
        <dt>Environment</dt>
        <dd className="mono wrap">{env.length === 0 ? "—" : env.map((r) => r.key).join(", ")}</dd>
        <dt>Name</dt>
        <dd>{draft.name || "—"}</dd>
        <dt>Project</dt>
        <dd>{draft.project || "your default project"}</dd>
      </dl>
      <div className="estimate" aria-live="polite">
        {estimate ? (
          <p>
            Estimated cost:{" "}
            <strong data-testid="estimate">{formatMoney(estimate.running_per_hour, estimate.currency)} / hour</strong>{" "}
            while running · {formatMoney(estimate.paused_per_hour, estimate.currency)} / hour while paused
          </p>
        ) : props.estimating ? (
          <p className="muted">Estimating…</p>
        ) : null}
        {props.estimateError !== null && <ErrorBanner error={props.estimateError} />}
      </div>
    </div>
  );
}
