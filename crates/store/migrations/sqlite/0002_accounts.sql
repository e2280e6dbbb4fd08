-- Accounts and money: KYC on users, project membership, webhook deduplication, wallets, the
-- append-only ledger and the metering watermarks.
--
-- Same rules as 0001: INTEGER Unix milliseconds, snake_case enumerations checked here. Money is
-- INTEGER micro-units of the server's currency.

-- Existing users (the bootstrap admin included) start unverified; the server verifies the
-- admin itself. SQLite checks the new CHECK against existing rows, which all get the default.
ALTER TABLE users ADD COLUMN kyc TEXT NOT NULL DEFAULT 'unverified'
    CHECK (kyc IN ('unverified', 'pending', 'verified', 'rejected'));
-- ADD COLUMN cannot be UNIQUE: a partial unique index says it instead.
ALTER TABLE users ADD COLUMN kyc_reference TEXT;
CREATE UNIQUE INDEX users_kyc_reference ON users (kyc_reference) WHERE kyc_reference IS NOT NULL;

CREATE TABLE project_members (
    project_id  INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
    added_at    INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id)
) STRICT, WITHOUT ROWID;

-- A user's projects.
CREATE INDEX project_members_by_user ON project_members (user_id, project_id);

-- Webhook events already received, so a replay is recognised.
CREATE TABLE webhook_deliveries (
    event_id  TEXT    PRIMARY KEY NOT NULL,
    at        INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- One wallet per project, created on first use. `balance` always equals the project's credits
-- minus its charges in `ledger`: both change in one transaction.
CREATE TABLE wallets (
    project_id     INTEGER PRIMARY KEY REFERENCES projects (id),
    balance        INTEGER NOT NULL,
    low_threshold  INTEGER NOT NULL DEFAULT 0 CHECK (low_threshold >= 0),
    updated_at     INTEGER NOT NULL
) STRICT;

-- Append-only. AUTOINCREMENT: ids never go back, even if the newest line were ever removed.
-- `sandbox_id` has no foreign key: the ledger outlives the sandboxes it charged.
CREATE TABLE ledger (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   INTEGER NOT NULL REFERENCES projects (id),
    at           INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('credit', 'charge')),
    amount       INTEGER NOT NULL CHECK (amount > 0),
    sandbox_id   TEXT,
    resource     TEXT    CHECK (resource IS NULL OR resource IN ('gpu', 'cpu', 'memory', 'storage')),
    seconds      INTEGER CHECK (seconds >= 0),
    period_from  INTEGER,
    period_to    INTEGER,
    note         TEXT,
    created_by   INTEGER REFERENCES users (id),
    -- A charge says what it charged and for when; a credit charges nothing.
    CHECK (
        (kind = 'charge' AND sandbox_id IS NOT NULL AND resource IS NOT NULL AND seconds IS NOT NULL
            AND period_from IS NOT NULL AND period_to IS NOT NULL AND period_from <= period_to)
        OR (kind = 'credit' AND sandbox_id IS NULL AND resource IS NULL AND seconds IS NULL
            AND period_from IS NULL AND period_to IS NULL)
    )
) STRICT;

-- A project's lines in a time range; the expression is the one `LedgerFilter` filters on.
CREATE INDEX ledger_by_project_time ON ledger (project_id, coalesce(period_from, at));
-- A sandbox's charges.
CREATE INDEX ledger_by_sandbox ON ledger (sandbox_id, id) WHERE sandbox_id IS NOT NULL;

-- Per sandbox, the time up to which its usage is charged (the metering watermark).
CREATE TABLE meters (
    sandbox_id     TEXT    PRIMARY KEY NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    charged_until  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
