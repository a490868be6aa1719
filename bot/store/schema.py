"""The schema, as numbered migrations written once for every backend.

Each script names its column types by role (`{serial}`, `{integer}`, `{real}`, `{blob}`);
a backend renders them in its own dialect, so SQLite and PostgreSQL share the versions
and differ only where their types do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ColumnTypes:
    """How one dialect spells each column role."""

    serial: str  # an increasing integer key given by the database
    integer: str  # 64 bits: GitHub's ids do not fit in 32
    real: str  # timestamps in seconds
    blob: str  # raw webhook payloads


SCRIPTS: tuple[str, ...] = (
    # 1: the webhook inbox, unique on GitHub's delivery GUID.
    """
    CREATE TABLE deliveries (
        seq {serial},
        id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        action TEXT,
        installation_id {integer},
        payload {blob} NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts {integer} NOT NULL DEFAULT 0,
        next_attempt_at {real} NOT NULL,
        lease_until {real},
        claimed_by TEXT,
        done_handlers TEXT NOT NULL DEFAULT '[]',
        last_error TEXT,
        received_at {real} NOT NULL,
        finished_at {real}
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    """,
    # 2: runs, the prompts queued for their boxes, and one-time notices.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        installation_id {integer} NOT NULL,
        repo_id {integer} NOT NULL,
        repo TEXT NOT NULL,
        repo_private {integer} NOT NULL,
        number {integer} NOT NULL,
        is_pull_request {integer} NOT NULL,
        state TEXT NOT NULL,
        requester TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT,
        reasoning_effort TEXT,
        pr_number {integer},
        box_id TEXT,
        comment_id {integer},
        pr_comment_id {integer},
        head_sha TEXT,
        check_run_id {integer},
        events_cursor TEXT,
        reason TEXT,
        summary TEXT NOT NULL DEFAULT '{{}}',
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        finished_at {real}
    );
    -- At most one active run per issue or pull request, whoever asks and however often.
    CREATE UNIQUE INDEX runs_one_active ON runs (repo_id, number)
        WHERE state IN ('requested', 'provisioning', 'prompting', 'working', 'idle');
    CREATE INDEX runs_by_pr ON runs (repo_id, pr_number);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE prompts (
        seq {serial},
        run_id TEXT NOT NULL REFERENCES runs (id),
        kind TEXT NOT NULL,
        requester TEXT NOT NULL,
        instructions TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        box_prompt_id TEXT,
        trigger_key TEXT UNIQUE,
        text TEXT,
        created_at {real} NOT NULL
    );
    CREATE INDEX prompts_by_run ON prompts (run_id, state);
    CREATE TABLE notices (key TEXT PRIMARY KEY, sent_at {real} NOT NULL);
    """,
    # 3: the explanation shown with a run that failed (which limit, what to do next).
    """
    ALTER TABLE runs ADD COLUMN notice TEXT;
    """,
    # 4: spending reservations, per-run TTL and default branch, and when prompts were sent.
    """
    ALTER TABLE runs ADD COLUMN reserved_at {real};
    ALTER TABLE runs ADD COLUMN ttl_seconds {integer};
    ALTER TABLE runs ADD COLUMN default_branch TEXT;
    ALTER TABLE prompts ADD COLUMN sent_at {real};
    CREATE INDEX runs_reserved ON runs (reserved_at);
    """,
    # 5: failing CI sent back to a pull request's box (auto_fix_ci), one row per head commit;
    # attempt 0 records a commit refused because the pull request used all its attempts.
    """
    CREATE TABLE ci_fixes (
        repo_id {integer} NOT NULL,
        pr_number {integer} NOT NULL,
        head_sha TEXT NOT NULL,
        attempt {integer} NOT NULL,
        created_at {real} NOT NULL,
        PRIMARY KEY (repo_id, pr_number, head_sha)
    );
    CREATE INDEX runs_by_head ON runs (repo_id, head_sha);
    """,
    # 6: boxes whose stop (or delete) has not gone through yet, to be tried again.
    """
    CREATE TABLE pending_stops (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        box_id TEXT NOT NULL,
        action TEXT NOT NULL,
        attempts {integer} NOT NULL DEFAULT 0,
        next_attempt_at {real} NOT NULL,
        last_error TEXT
    );
    """,
    # 7: a hash of the body last written to each tracking comment, to skip unchanged edits.
    """
    CREATE TABLE shown_comments (
        comment_id {integer} PRIMARY KEY,
        body_hash TEXT NOT NULL,
        shown_at {real} NOT NULL
    );
    """,
    # 8: redeliveries asked of GitHub (once per delivery GUID) and when its log was last read.
    """
    CREATE TABLE redeliveries (
        guid TEXT PRIMARY KEY,
        asked_at {real} NOT NULL
    );
    CREATE TABLE app_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 9: which instance drives each run, and until when (a lease it renews while it drives).
    """
    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_until {real};
    """,
    # 10: finished deliveries by age, for pruning the inbox.
    """
    CREATE INDEX deliveries_finished ON deliveries (status, finished_at);
    """,
    # 11: handlers are recorded by family and function (`issues.on_labeled`), not by module
    # (`handlers.issues.on_labeled`), so that a move of their package changes no key.
    """
    UPDATE deliveries SET done_handlers = REPLACE(done_handlers, '"handlers.', '"')
    WHERE done_handlers LIKE '%"handlers.%';
    """,
    # 12: what Box last said about each run's box: its setup script, billed time and dollars
    # (NULL: this Box does not report usage); final once the box is stopped.
    """
    CREATE TABLE box_reports (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        box_id TEXT NOT NULL,
        installation_id {integer} NOT NULL,
        repo_id {integer} NOT NULL,
        setup_status TEXT,
        setup_error TEXT,
        seconds {real} NOT NULL,
        dollars {real},
        dollars_per_second {real} NOT NULL,
        billed {integer} NOT NULL,
        final {integer} NOT NULL,
        read_at {real} NOT NULL
    );
    CREATE INDEX box_reports_by_installation ON box_reports (installation_id, read_at);
    """,
)


def render(types: ColumnTypes) -> tuple[str, ...]:
    """Return the migrations in the dialect of *types*."""
    return tuple(
        script.format(serial=types.serial, integer=types.integer, real=types.real, blob=types.blob)
        for script in SCRIPTS
    )
