// Small shared pieces: state badges, errors, a confirmation dialog, a ticking clock.

import { useEffect, useRef, useState, type ReactNode } from "react";
import type { SandboxState } from "../api/client";
import { errorMessage } from "../api/client";

const STATE_LABEL: Record<SandboxState, string> = {
  provisioning: "Provisioning",
  running: "Running",
  paused: "Paused",
  terminated: "Terminated",
  failed: "Failed",
};

export const STATES = Object.keys(STATE_LABEL) as SandboxState[];

export function stateLabel(s: SandboxState): string {
  return STATE_LABEL[s] ?? s;
}

/** Active sandboxes change by themselves (and cost money): the list polls while any is. */
export function isActive(s: SandboxState): boolean {
  return s === "provisioning" || s === "running";
}

export function StateBadge({ state }: { state: SandboxState }) {
  return (
    <span className={`badge badge-${state}`} data-state={state}>
      {stateLabel(state)}
    </span>
  );
}

export function ErrorBanner({ error, onDismiss }: { error: unknown; onDismiss?: () => void }) {
  if (!error) return null;
  return (
    <div className="alert alert-error alert-dismissable" role="alert">
      <span>{errorMessage(error)}</span>
      {onDismiss && (
        <button type="button" className="link" onClick={onDismiss} aria-label="Dismiss">
          ✕
        </button>
      )}
    </div>
  );
}

export function FieldError({ id, message }: { id: string; message?: string }) {
  if (!message) return null;
  return (
    <p className="field-error" id={id} role="alert">
      {message}
    </p>
  );
}

/** The current time (ms), updated every `intervalMs`. */
export function useNow(intervalMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs]);
  return now;
}

interface ConfirmProps {
  title: string;
  children: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  busy?: boolean;
  onConfirm: () => void;
  onCancel: () => void;
}

/** A modal confirmation (Escape or Cancel closes it). */
export function ConfirmDialog({ title, children, confirmLabel, danger, busy, onConfirm, onCancel }: ConfirmProps) {
  const cancelRef = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    cancelRef.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onCancel();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onCancel]);
  return (
    <div className="modal-backdrop" onClick={onCancel}>
      <div
        className="modal"
        role="dialog"
        aria-modal="true"
        aria-labelledby="confirm-title"
        onClick={(e) => e.stopPropagation()}
      >
        <h2 id="confirm-title">{title}</h2>
        <div className="modal-body">{children}</div>
        <div className="modal-actions">
          <button type="button" ref={cancelRef} onClick={onCancel} disabled={busy}>
            Cancel
          </button>
          <button type="button" className={danger ? "danger" : "primary"} onClick={onConfirm} disabled={busy}>
            {busy ? "Working…" : confirmLabel}
          </button>
        </div>
      </div>
    </div>
  );
}

export function Spinner({ label = "Loading…" }: { label?: string }) {
  return (
    <p className="muted" role="status">
      {label}
    </p>
  );
}
