// The sandbox's files: list a directory, go in and up, upload, download, make a folder, delete.

import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState, type FormEvent } from "react";
import { apiFetch, unwrap, type FileEntry } from "../../api/client";
import { ConfirmDialog, ErrorBanner, Spinner } from "../../components/common";
import { formatMode, formatSize, formatTime } from "../../lib/format";
import { useSession } from "../../session";

export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

export function parentPath(p: string): string {
  const trimmed = p.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i <= 0 ? "/" : trimmed.slice(0, i);
}

export function sortEntries(entries: FileEntry[]): FileEntry[] {
  return [...entries].sort((a, b) => {
    const da = a.kind === "dir" ? 0 : 1;
    const db = b.kind === "dir" ? 0 : 1;
    return da - db || a.name.localeCompare(b.name);
  });
}

export function FileBrowser({ sandboxId }: { sandboxId: string }) {
  const { api, apiKey } = useSession();
  const queries = useQueryClient();
  const [cwd, setCwd] = useState<string>();
  const [pathInput, setPathInput] = useState("");
  const [status, setStatus] = useState<string>();
  const [error, setError] = useState<unknown>();
  const [toDelete, setToDelete] = useState<FileEntry>();
  const upload = useRef<HTMLInputElement>(null);
  const id = { id: sandboxId };
  const base = `/v1/sandboxes/${encodeURIComponent(sandboxId)}/files`;

  const home = useQuery({
    queryKey: ["files", sandboxId, "home"],
    queryFn: () => unwrap(api.GET("/v1/sandboxes/{id}/files/stat", { params: { path: id, query: { path: "." } } })),
    enabled: cwd === undefined,
  });
  useEffect(() => {
    if (cwd === undefined && home.data) setCwd(home.data.path);
    if (cwd === undefined && home.isError) setCwd("/");
  }, [cwd, home.data, home.isError]);
  useEffect(() => {
    if (cwd !== undefined) setPathInput(cwd);
  }, [cwd]);

  const list = useQuery({
    queryKey: ["files", sandboxId, "list", cwd],
    queryFn: () =>
      unwrap(api.GET("/v1/sandboxes/{id}/files", { params: { path: id, query: { path: cwd ?? "/" } } })),
    enabled: cwd !== undefined,
  });
  const refresh = () => queries.invalidateQueries({ queryKey: ["files", sandboxId, "list"] });

  const remove = useMutation({
    mutationFn: (e: FileEntry) =>
      unwrap(
        api.DELETE("/v1/sandboxes/{id}/files", {
          params: { path: id, query: { path: e.path, recursive: e.kind === "dir" } },
        }),
      ),
    onSuccess: () => void refresh(),
    onError: (e) => setError(e),
  });
  const mkdir = useMutation({
    mutationFn: (path: string) =>
      unwrap(api.POST("/v1/sandboxes/{id}/files/mkdir", { params: { path: id }, body: { path } })),
    onSuccess: () => void refresh(),
    onError: (e) => setError(e),
  });

  async function download(e: FileEntry) {
    setError(undefined);
    setStatus(`Downloading ${e.name}…`);
    try {
      const res = await apiFetch(apiKey, `${base}/content?path=${encodeURIComponent(e.path)}`);
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = e.name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      setStatus(undefined);
    } catch (err) {
      setStatus(undefined);
      setError(err);
    }
  }

  async function uploadFiles(files: FileList | null) {
    if (!files || files.length === 0 || cwd === undefined) return;
    setError(undefined);
    try {
      for (const f of Array.from(files)) {
        setStatus(`Uploading ${f.name}…`);
        await apiFetch(apiKey, `${base}/content?path=${encodeURIComponent(joinPath(cwd, f.name))}`, {
          method: "PUT",
          headers: { "content-type": "application/octet-stream" },
          body: f,
        });
      }
      setStatus(`Uploaded ${files.length === 1 ? files[0].name : `${files.length} files`}.`);
    } catch (err) {
      setStatus(undefined);
      setError(err);
    } finally {
      if (upload.current) upload.current.value = "";
      void refresh();
    }
  }

  function go(e: FormEvent) {
    e.preventDefault();
    const p = pathInput.trim();
    if (p) setCwd(p);
  }

  if (cwd === undefined) return <Spinner />;
  const entries = sortEntries(list.data ?? []);
  return (
    <div className="files">
      <form className="toolbar" onSubmit={go}>
        <button type="button" onClick={() => setCwd(parentPath(cwd))} disabled={cwd === "/"} aria-label="Up one folder">
          ↑ Up
        </button>
        <input
          aria-label="Path"
          className="mono grow"
          value={pathInput}
          onChange={(e) => setPathInput(e.target.value)}
          spellCheck={false}
        />
        <button type="submit">Go</button>
        <button type="button" onClick={() => void refresh()}>
          Refresh
        </button>
        <button
          type="button"
          onClick={() => {
            const name = window.prompt("New folder name");
            if (name) mkdir.mutate(joinPath(cwd, name));
          }}
        >
          New folder
        </button>
        <label className="button primary">
          Upload
          <input
            ref={upload}
            type="file"
            multiple
            className="sr-only"
            aria-label="Upload files"
            onChange={(e) => void uploadFiles(e.target.files)}
          />
        </label>
      </form>
      {status && (
        <p className="muted small" role="status">
          {status}
        </p>
      )}
      {error !== undefined && <ErrorBanner error={error} onDismiss={() => setError(undefined)} />}
      {list.isError && <ErrorBanner error={list.error} />}
      {list.isPending ? (
        <Spinner />
      ) : (
        <table className="table responsive files-table" aria-label={`Files in ${cwd}`}>
          <thead>
            <tr>
              <th>Name</th>
              <th>Size</th>
              <th>Mode</th>
              <th>Modified</th>
              <th>
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {entries.length === 0 && (
              <tr>
                <td colSpan={5} className="muted">
                  Empty folder.
                </td>
              </tr>
            )}
            {entries.map((e) => (
              <tr key={e.path} data-file={e.name}>
                <td data-label="Name" className="mono wrap">
                  {e.kind === "dir" ? (
                    <button type="button" className="link" onClick={() => setCwd(e.path)}>
                      {e.name}/
                    </button>
                  ) : (
                    <span>
                      {e.name}
                      {e.kind === "symlink" && <span className="muted"> → {e.symlink_target}</span>}
                    </span>
                  )}
                </td>
                <td data-label="Size">{e.kind === "dir" ? "—" : formatSize(e.size)}</td>
                <td data-label="Mode" className="mono small">
                  {formatMode(e.mode)}
                </td>
                <td data-label="Modified" className="small">
                  {formatTime(e.modified_at)}
                </td>
                <td data-label="Actions">
                  <div className="actions">
                    {e.kind === "file" && (
                      <button type="button" onClick={() => void download(e)} aria-label={`Download ${e.name}`}>
                        Download
                      </button>
                    )}
                    <button
                      type="button"
                      className="danger-outline"
                      onClick={() => setToDelete(e)}
                      aria-label={`Delete ${e.name}`}
                    >
                      Delete
                    </button>
                  </div>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {toDelete && (
        <ConfirmDialog
          title={`Delete ${toDelete.name}?`}
          confirmLabel="Delete"
          danger
          onCancel={() => setToDelete(undefined)}
          onConfirm={() => {
            remove.mutate(toDelete);
            setToDelete(undefined);
          }}
        >
          <p>
            {toDelete.kind === "dir" ? "This folder and everything in it" : "This file"} (
            <code>{toDelete.path}</code>) will be removed from the sandbox.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}
