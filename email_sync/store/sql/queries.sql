-- Named queries for email_sync.store.state_store (":name" are bind parameters).
-- Portable between SQLite >= 3.24 and PostgreSQL (INSERT ... ON CONFLICT).

-- name: get_watermark
SELECT synced_through FROM sync_watermark WHERE job_id = :job_id;

-- name: advance_watermark
INSERT INTO sync_watermark (job_id, synced_through, last_run_id, updated_at)
VALUES (:job_id, :synced_through, :run_id, :now)
ON CONFLICT (job_id) DO UPDATE SET
    synced_through = excluded.synced_through,
    last_run_id = excluded.last_run_id,
    updated_at = excluded.updated_at
WHERE sync_watermark.synced_through < excluded.synced_through;

-- name: set_watermark
INSERT INTO sync_watermark (job_id, synced_through, last_run_id, updated_at)
VALUES (:job_id, :synced_through, :run_id, :now)
ON CONFLICT (job_id) DO UPDATE SET
    synced_through = excluded.synced_through,
    last_run_id = excluded.last_run_id,
    updated_at = excluded.updated_at;

-- name: get_cursors
SELECT folder, cursor FROM sync_cursor WHERE job_id = :job_id AND source = :source;

-- name: save_cursor
INSERT INTO sync_cursor (job_id, folder, source, cursor, run_id, updated_at)
VALUES (:job_id, :folder, :source, :cursor, :run_id, :now)
ON CONFLICT (job_id, folder) DO UPDATE SET
    source = excluded.source,
    cursor = excluded.cursor,
    run_id = excluded.run_id,
    updated_at = excluded.updated_at;

-- name: claim
INSERT INTO sync_ledger (idempotency_key, job_id, message_key, item_id, folder, part, parts,
                         state, attempts, run_id, email_at, updated_at, relations_ok, files_ok, message_id)
VALUES (:idempotency_key, :job_id, :message_key, :item_id, :folder, :part, :parts,
        'claimed', 1, :run_id, :email_at, :now, :relations_ok, :files_ok, :message_id)
ON CONFLICT (idempotency_key) DO UPDATE SET
    run_id = excluded.run_id,
    updated_at = excluded.updated_at,
    relations_ok = CASE WHEN sync_ledger.state = 'created' THEN sync_ledger.relations_ok ELSE excluded.relations_ok END,
    files_ok = CASE WHEN sync_ledger.state = 'created' THEN sync_ledger.files_ok ELSE excluded.files_ok END,
    state = CASE WHEN sync_ledger.state = 'created' THEN 'created' ELSE 'claimed' END;

-- name: mark_created
UPDATE sync_ledger SET state = 'created', task_id = :task_id, error_code = NULL,
       error_message = NULL, updated_at = :now,
       created_run_id = COALESCE(created_run_id, :created_run_id)
WHERE idempotency_key = :idempotency_key;

-- name: mark_relations
UPDATE sync_ledger SET relations_ok = :ok, error_code = :error_code, error_message = :error_message,
       updated_at = :now
WHERE idempotency_key = :idempotency_key;

-- name: mark_files
UPDATE sync_ledger SET files_ok = :ok, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key;

-- name: count_attempt
UPDATE sync_ledger SET attempts = attempts + 1, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key;

-- name: mark_failed
UPDATE sync_ledger SET state = 'failed', error_code = :error_code, error_message = :error_message,
       updated_at = :now
WHERE idempotency_key = :idempotency_key AND state <> 'created';

-- name: mark_category
UPDATE sync_ledger SET category_marked = :marked, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key;

-- name: category_missed
UPDATE sync_ledger SET category_attempts = category_attempts + 1, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key;

-- name: relocate
UPDATE sync_ledger SET item_id = :item_id, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key;

-- name: ledger_for_messages
SELECT idempotency_key, message_key, part, state, task_id, attempts, category_marked, relations_ok,
       files_ok, created_run_id, error_code, error_message
FROM sync_ledger WHERE job_id = :job_id AND message_key IN :message_keys;

-- name: recorded_since
SELECT message_key, MIN(email_at) AS email_at FROM sync_ledger
WHERE job_id = :job_id AND state = 'created' AND email_at >= :since AND message_key IN :message_keys
GROUP BY message_key;

-- name: retryable
SELECT DISTINCT message_key, item_id, folder FROM sync_ledger
WHERE job_id = :job_id AND attempts < :max_attempts
  AND (state IN ('failed', 'claimed') OR relations_ok = 0 OR files_ok = 0);

-- name: incomplete
SELECT message_key, state, relations_ok, files_ok, category_marked, attempts FROM sync_ledger
WHERE job_id = :job_id AND email_at >= :since
  AND (state <> 'created' OR relations_ok = 0 OR files_ok = 0 OR category_marked = 0);

-- name: unmarked
SELECT DISTINCT message_key, item_id, message_id, category_attempts FROM sync_ledger
WHERE job_id = :job_id AND state = 'created' AND category_marked = 0;

-- name: files_for_messages
SELECT message_key, attachment_key, state, content_version_id, linked_task_id, attempts, error_code
FROM sync_file WHERE job_id = :job_id AND message_key IN :message_keys;

-- name: claim_file
INSERT INTO sync_file (job_id, message_key, attachment_key, state, linked_task_id, attempts, updated_at)
VALUES (:job_id, :message_key, :attachment_key, 'claimed', :task_id, 1, :now)
ON CONFLICT (job_id, message_key, attachment_key) DO UPDATE SET
    state = CASE WHEN sync_file.state = 'uploaded' THEN 'uploaded' ELSE 'claimed' END,
    attempts = sync_file.attempts + 1, linked_task_id = excluded.linked_task_id, updated_at = excluded.updated_at;

-- name: fail_file
UPDATE sync_file SET state = 'failed', error_code = :error_code, updated_at = :now
WHERE job_id = :job_id AND message_key = :message_key AND attachment_key = :attachment_key
  AND state <> 'uploaded';

-- name: record_file
INSERT INTO sync_file (job_id, message_key, attachment_key, state, content_version_id, linked_task_id,
                       attempts, updated_at)
VALUES (:job_id, :message_key, :attachment_key, 'uploaded', :content_version_id, :task_id, 1, :now)
ON CONFLICT (job_id, message_key, attachment_key) DO UPDATE SET
    state = 'uploaded', content_version_id = excluded.content_version_id,
    linked_task_id = excluded.linked_task_id, error_code = NULL, updated_at = excluded.updated_at;

-- name: record_outcome
INSERT INTO sync_outcome (run_id, job_id, message_key, outcome, reason, detail, created_at)
VALUES (:run_id, :job_id, :message_key, :outcome, :reason, :detail, :now)
ON CONFLICT (run_id, job_id, message_key) DO UPDATE SET
    outcome = excluded.outcome, reason = excluded.reason, detail = excluded.detail,
    created_at = excluded.created_at;

-- name: outcomes_for_run
SELECT message_key, outcome, reason, detail FROM sync_outcome
WHERE run_id = :run_id AND job_id = :job_id ORDER BY message_key;

-- name: start_run
INSERT INTO sync_run (job_id, run_id, interval_start, interval_end, status, started_at)
VALUES (:job_id, :run_id, :interval_start, :interval_end, 'running', :now)
ON CONFLICT (job_id, run_id) DO UPDATE SET
    interval_start = excluded.interval_start, interval_end = excluded.interval_end,
    status = 'running', started_at = excluded.started_at, finished_at = NULL;

-- name: finish_run
UPDATE sync_run SET status = :status, counts = :counts, finished_at = :now
WHERE job_id = :job_id AND run_id = :run_id;

-- name: get_run
SELECT job_id, run_id, interval_start, interval_end, status, counts, started_at, finished_at
FROM sync_run WHERE job_id = :job_id AND run_id = :run_id;

-- name: latest_runs
SELECT r.job_id, r.run_id, r.interval_start, r.interval_end, r.status, r.counts, r.started_at,
       r.finished_at
FROM sync_run r
WHERE r.started_at = (SELECT MAX(r2.started_at) FROM sync_run r2 WHERE r2.job_id = r.job_id)
ORDER BY r.job_id;

-- name: take_lease
INSERT INTO sync_lease (job_id, holder, expires_at) VALUES (:job_id, :holder, :expires_at)
ON CONFLICT (job_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE sync_lease.holder = excluded.holder OR sync_lease.expires_at < :now;

-- name: lease_holder
SELECT holder, expires_at FROM sync_lease WHERE job_id = :job_id;

-- name: release_lease
DELETE FROM sync_lease WHERE job_id = :job_id AND holder = :holder;

-- name: cache_get
SELECT value FROM sync_cache WHERE cache_key = :cache_key AND expires_at > :now;

-- name: cache_put
INSERT INTO sync_cache (cache_key, value, expires_at) VALUES (:cache_key, :value, :expires_at)
ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at;
