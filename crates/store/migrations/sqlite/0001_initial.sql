-- sandpit's first SQLite schema.
--
-- Timestamps are INTEGER Unix milliseconds (UTC). Maps, lists and the GPU request are JSON text.
-- Enumerations are their snake_case names, checked here so a bad write fails loudly.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    hash        BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    prefix      TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    project_id  INTEGER REFERENCES projects (id),
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE INDEX api_keys_by_user ON api_keys (user_id);

CREATE TABLE sandboxes (
    id             TEXT    PRIMARY KEY NOT NULL,
    project_id     INTEGER NOT NULL REFERENCES projects (id),
    created_by     INTEGER NOT NULL REFERENCES users (id),
    name           TEXT,
    state          TEXT    NOT NULL
                   CHECK (state IN ('provisioning', 'running', 'paused', 'terminated', 'failed')),
    state_reason   TEXT,
    desired        TEXT    NOT NULL CHECK (desired IN ('running', 'paused', 'deleted')),
    image          TEXT    NOT NULL,
    cpu_millis     INTEGER NOT NULL CHECK (cpu_millis >= 0),
    memory_bytes   INTEGER NOT NULL CHECK (memory_bytes >= 0),
    gpu            TEXT,
    env            TEXT    NOT NULL,
    command        TEXT,
    keep_running   INTEGER NOT NULL CHECK (keep_running IN (0, 1)),
    timeout_s      INTEGER NOT NULL CHECK (timeout_s >= 0),
    metadata       TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    ends_at        INTEGER,
    remaining_ms   INTEGER CHECK (remaining_ms >= 0),
    paused_at      INTEGER,
    terminated_at  INTEGER,
    exit_code      INTEGER,
    credentials    BLOB,
    generation     INTEGER NOT NULL CHECK (generation >= 1)
) STRICT;

-- Listing a project's sandboxes newest first (ids are time-ordered).
CREATE INDEX sandboxes_by_project ON sandboxes (project_id, id);
-- Listing by state, and recovery at startup.
CREATE INDEX sandboxes_by_state ON sandboxes (state, id);
-- The timeout reconciler: running sandboxes by deadline.
CREATE INDEX sandboxes_running_deadline ON sandboxes (ends_at) WHERE state = 'running';
-- The retention reconciler: paused sandboxes by pause time.
CREATE INDEX sandboxes_paused_at ON sandboxes (paused_at) WHERE state = 'paused';
-- A name is taken in its project while a sandbox of that name is not terminated or failed.
CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes (project_id, name)
    WHERE name IS NOT NULL AND state NOT IN ('terminated', 'failed');

CREATE TABLE sandbox_events (
    sandbox_id  TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    at          INTEGER NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('state', 'progress')),
    state       TEXT,
    reason      TEXT,
    message     TEXT,
    progress    TEXT,
    PRIMARY KEY (sandbox_id, seq)
) STRICT, WITHOUT ROWID;
