// Pause, resume and delete, shared by the list and the sandbox page.

import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { ApiError, unwrap, type Sandbox } from "../api/client";
import { ConfirmDialog } from "../components/common";
import { useSession } from "../session";

export type Action = "pause" | "resume" | "delete";

export function useSandboxAction() {
  const { api } = useSession();
  const queries = useQueryClient();
  return useMutation({
    mutationFn: async ({ sandbox, action }: { sandbox: Sandbox; action: Action }) => {
      const path = { params: { path: { id: sandbox.id } } };
      if (action === "pause") return unwrap(api.POST("/v1/sandboxes/{id}/pause", path));
      if (action === "resume") return unwrap(api.POST("/v1/sandboxes/{id}/resume", path));
      await unwrap(api.DELETE("/v1/sandboxes/{id}", path));
      return undefined;
    },
    onSettled: () => queries.invalidateQueries({ queryKey: ["sandboxes"] }),
  });
}

export function displayName(s: Sandbox): string {
  return s.name ?? s.id;
}

/** Why an action failed, in words that say what to do. */
export function actionError(action: Action, s: Sandbox, e: unknown): string {
  const what = `Could not ${action} ${displayName(s)}`;
  if (e instanceof ApiError) {
    if (e.code === "kyc_required") return `${what}: ${e.message}`;
    if (e.code === "insufficient_funds") return `${what}: the project's wallet is empty (${e.message})`;
    return `${what}: ${e.message}`;
  }
  return `${what}: ${(e as Error).message}`;
}

interface ButtonsProps {
  sandbox: Sandbox;
  busy: boolean;
  onAction: (action: Action) => void;
  compact?: boolean;
}

/** The actions that apply in the sandbox's state; Delete asks first. */
export function ActionButtons({ sandbox, busy, onAction }: ButtonsProps) {
  const [confirm, setConfirm] = useState(false);
  const s = sandbox.state;
  const ended = s === "terminated" || s === "failed";
  const label = displayName(sandbox);
  if (ended) return null;
  return (
    <div className="actions">
      {s === "running" && (
        <button type="button" disabled={busy} onClick={() => onAction("pause")} aria-label={`Pause ${label}`}>
          Pause
        </button>
      )}
      {s === "paused" && (
        <button type="button" disabled={busy} onClick={() => onAction("resume")} aria-label={`Resume ${label}`}>
          Resume
        </button>
      )}
      {!ended && (
        <button
          type="button"
          className="danger-outline"
          disabled={busy}
          onClick={() => setConfirm(true)}
          aria-label={`Delete ${label}`}
        >
          Delete
        </button>
      )}
      {confirm && (
        <ConfirmDialog
          title={`Delete ${label}?`}
          confirmLabel="Delete sandbox"
          danger
          onCancel={() => setConfirm(false)}
          onConfirm={() => {
            setConfirm(false);
            onAction("delete");
          }}
        >
          <p>
            This ends the sandbox <strong>{label}</strong> ({sandbox.id}) at once: its processes stop and its
            disk is removed. It cannot be undone.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}
