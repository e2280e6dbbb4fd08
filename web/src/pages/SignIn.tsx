// Sign-in with an API key: checked against /v1/me, then kept in this tab's sessionStorage.

import { useState, type FormEvent } from "react";
import { Navigate, useLocation, useNavigate } from "react-router";
import { ApiError, makeClient, unwrap } from "../api/client";
import { useSession } from "../session";
import { FieldError } from "../components/common";

export function SignIn() {
  const { apiKey, signIn } = useSession();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const navigate = useNavigate();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from ?? "/";
  if (apiKey) return <Navigate to={from} replace />;

  async function submit(e: FormEvent) {
    e.preventDefault();
    const k = key.trim();
    if (k === "") {
      setError("paste an API key");
      return;
    }
    setBusy(true);
    setError(undefined);
    try {
      await unwrap(makeClient(k).GET("/v1/me"));
      signIn(k);
      navigate(from, { replace: true });
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? "this key is not valid (unknown or revoked)"
          : (err as Error).message,
      );
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="signin">
      <form className="card signin-card" onSubmit={submit} noValidate>
        <h1 className="brand">sandpit</h1>
        <p className="muted">Sign in with an API key. It is kept in this browser tab only.</p>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          placeholder="sp_…"
          value={key}
          onChange={(e) => setKey(e.target.value)}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "api-key-error" : undefined}
          autoFocus
        />
        <FieldError id="api-key-error" message={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p className="muted small">
          The first key is printed by <code>sandpit serve</code> on its first start and saved in{" "}
          <code>~/.config/sandpit/credentials.json</code>; <code>sandpit key create</code> makes more.
        </p>
      </form>
    </div>
  );
}
