-- Sync state store: one schema for SQLite (the quick start's default) and PostgreSQL.
-- Timestamps are ISO-8601 UTC strings of one fixed width, so they sort and compare as text
-- the same way on both engines. No mail content is stored: messages are referred to by
-- message_key (SHA-256 of the RFC 5322 Message-ID) and the source's item id.

CREATE TABLE IF NOT EXISTS sync_watermark (
    job_id          VARCHAR(100) PRIMARY KEY,
    synced_through  VARCHAR(32)  NOT NULL,  -- every email received/sent up to here is done
    last_run_id     VARCHAR(250),
    updated_at      VARCHAR(32)  NOT NULL
);

-- Where each folder's incremental read stands, in the source's own terms (EWS: the time the
-- folder is synced through, Graph: a deltaLink). Saved only when a run finishes. A cursor of
-- another source than the job's current one is ignored (a job switched sources).
CREATE TABLE IF NOT EXISTS sync_cursor (
    job_id      VARCHAR(100) NOT NULL,
    folder      VARCHAR(255) NOT NULL,
    source      VARCHAR(16)  NOT NULL,
    cursor      TEXT         NOT NULL,
    run_id      VARCHAR(250),
    updated_at  VARCHAR(32)  NOT NULL,
    PRIMARY KEY (job_id, folder)
);

-- One row per Task we intend to create: (job, message, part). The idempotency key is also
-- written to the Task's external-id field, so Salesforce itself refuses a second copy.
CREATE TABLE IF NOT EXISTS sync_ledger (
    idempotency_key VARCHAR(64)  PRIMARY KEY,
    job_id          VARCHAR(100) NOT NULL,
    message_key     VARCHAR(64)  NOT NULL,
    item_id         VARCHAR(512) NOT NULL,
    folder          VARCHAR(255) NOT NULL,
    part            INTEGER      NOT NULL,
    parts           INTEGER      NOT NULL,
    state           VARCHAR(16)  NOT NULL,  -- claimed | created | failed
    task_id         VARCHAR(18),
    attempts        INTEGER      NOT NULL DEFAULT 0,
    error_code      VARCHAR(64),
    error_message   VARCHAR(1000),
    run_id          VARCHAR(250),
    email_at        VARCHAR(32)  NOT NULL,  -- sent/received time: reply detection window
    updated_at      VARCHAR(32)  NOT NULL,
    category_marked INTEGER      NOT NULL DEFAULT 0,
    relations_ok    INTEGER      NOT NULL DEFAULT 1,  -- every TaskRelation of this Task confirmed
    files_ok        INTEGER      NOT NULL DEFAULT 1,  -- every selected file of the email confirmed
    created_run_id  VARCHAR(250),                     -- the run whose upsert created the Task
    message_id      VARCHAR(1000),                    -- to find the email again after a move
    category_attempts INTEGER    NOT NULL DEFAULT 0   -- runs that could not write the category
);
CREATE INDEX IF NOT EXISTS ix_sync_ledger_message ON sync_ledger (job_id, message_key);
CREATE INDEX IF NOT EXISTS ix_sync_ledger_state ON sync_ledger (job_id, state);

-- Files uploaded for an email's attachments (ContentVersion with FirstPublishLocationId = the
-- Task, which links it). A row is *claimed* before the upload is sent, *uploaded* once
-- Salesforce confirmed it, *failed* when Salesforce refused it or the mailbox could not serve
-- it. A claimed row is reconciled against Salesforce by the next attempt (under the job's lease
-- no other run holds a claim).
CREATE TABLE IF NOT EXISTS sync_file (
    job_id              VARCHAR(100) NOT NULL,
    message_key         VARCHAR(64)  NOT NULL,
    attachment_key      VARCHAR(64)  NOT NULL,
    state               VARCHAR(16)  NOT NULL,  -- claimed | uploaded | failed
    attempts            INTEGER      NOT NULL DEFAULT 0,
    error_code          VARCHAR(64),
    content_version_id  VARCHAR(18),
    linked_task_id      VARCHAR(18),
    updated_at          VARCHAR(32)  NOT NULL,
    PRIMARY KEY (job_id, message_key, attachment_key)
);

-- What happened to every extracted email in a run, with a machine-readable reason.
CREATE TABLE IF NOT EXISTS sync_outcome (
    run_id      VARCHAR(250) NOT NULL,
    job_id      VARCHAR(100) NOT NULL,
    message_key VARCHAR(64)  NOT NULL,
    outcome     VARCHAR(16)  NOT NULL,  -- recorded | skipped | failed
    reason      VARCHAR(64),
    detail      VARCHAR(1000),
    created_at  VARCHAR(32)  NOT NULL,
    PRIMARY KEY (run_id, job_id, message_key)
);

CREATE TABLE IF NOT EXISTS sync_run (
    job_id         VARCHAR(100) NOT NULL,
    run_id         VARCHAR(250) NOT NULL,
    interval_start VARCHAR(32)  NOT NULL,
    interval_end   VARCHAR(32)  NOT NULL,
    status         VARCHAR(16)  NOT NULL,  -- running | success | failed
    counts         TEXT,                   -- JSON run summary (numbers only)
    started_at     VARCHAR(32)  NOT NULL,
    finished_at    VARCHAR(32),
    PRIMARY KEY (job_id, run_id)
);

-- One writer per job at a time: the steps that write (insert, upload, finish) hold the job's
-- lease, and a holder that died loses it when it expires.
CREATE TABLE IF NOT EXISTS sync_lease (
    job_id      VARCHAR(100) PRIMARY KEY,
    holder      VARCHAR(250) NOT NULL,
    expires_at  VARCHAR(32)  NOT NULL
);

-- Small cache for Salesforce metadata that rarely changes (describe field lengths, owner ids).
CREATE TABLE IF NOT EXISTS sync_cache (
    cache_key  VARCHAR(255) PRIMARY KEY,
    value      TEXT         NOT NULL,
    expires_at VARCHAR(32)  NOT NULL
);
