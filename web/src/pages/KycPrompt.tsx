// Shown instead of the create wizard to a user whose identity is not verified.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { unwrap } from "../api/client";
import { ErrorBanner, Spinner } from "../components/common";
import { useSession } from "../session";

const STATUS_TEXT: Record<string, string> = {
  unverified: "Not started",
  pending: "Pending: waiting for the provider's answer",
  rejected: "Rejected",
  verified: "Verified",
};

export function KycPrompt() {
  const { api } = useSession();
  const queries = useQueryClient();
  const kyc = useQuery({ queryKey: ["kyc"], queryFn: () => unwrap(api.GET("/v1/kyc")) });
  const start = useMutation({
    mutationFn: () => unwrap(api.POST("/v1/kyc")),
    onSuccess: (view) => {
      queries.setQueryData(["kyc"], view);
      void queries.invalidateQueries({ queryKey: ["me"] });
    },
  });
  if (kyc.isPending) return <Spinner />;
  const view = kyc.data;
  const status = view?.status ?? "unverified";
  return (
    <div className="card kyc" role="region" aria-labelledby="kyc-title">
      <h2 id="kyc-title">Verify your identity to create sandboxes</h2>
      <p>
        Creating or resuming a sandbox needs a verified account (KYC). Complete the verification with our provider;
        the console unlocks as soon as it answers.
      </p>
      <dl className="details">
        <dt>Status</dt>
        <dd>
          <span className={`badge kyc-${status}`} data-kyc={status}>
            {STATUS_TEXT[status] ?? status}
          </span>
        </dd>
        {view?.reference && (
          <>
            <dt>Reference</dt>
            <dd className="mono">{view.reference}</dd>
          </>
        )}
      </dl>
      {kyc.isError && <ErrorBanner error={kyc.error} />}
      {start.isError && <ErrorBanner error={start.error} />}
      <div className="actions">
        {status !== "pending" && (
          <button type="button" className="primary" onClick={() => start.mutate()} disabled={start.isPending}>
            {start.isPending ? "Starting…" : status === "rejected" ? "Start again" : "Start verification"}
          </button>
        )}
        {status === "pending" && view?.verification_url && (
          <a className="button primary" href={view.verification_url} target="_blank" rel="noreferrer">
            Continue verification
          </a>
        )}
        {status === "pending" && (
          <button
            type="button"
            onClick={() => {
              void kyc.refetch();
              void queries.invalidateQueries({ queryKey: ["me"] });
            }}
          >
            Check status
          </button>
        )}
      </div>
      {status === "pending" && !view?.verification_url && (
        <p className="muted small">
          Your verification is under way with reference <code>{view?.reference}</code>. An administrator can also
          mark you verified (<code>sandpit kyc set NAME verified</code>).
        </p>
      )}
    </div>
  );
}
