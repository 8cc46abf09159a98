"""The job store: SQLite on the data volume. Every item is recorded before work starts; its outputs are
recorded only after they were written atomically, so a crash loses nothing done and a rerun resumes exactly.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every item done
    FAILED = "failed"  # finished, some items failed
    CANCELLED = "cancelled"


class ItemState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Item:
    key: str  # stable across reruns: what makes "the same item"
    position: int
    payload: dict[str, Any]  # what the pipeline needs to process it
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    error: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobRecord:
    id: str
    pipeline: str
    request: dict[str, Any]
    state: JobState
    created: float
    updated: float
    error: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    summary: dict[str, str] = field(default_factory=dict)  # what the pipeline wrote when the job ended

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def job_id(pipeline: str, request: dict[str, Any]) -> str:
    """The same pipeline, inputs, outputs and options give the same job: rerunning a command resumes it."""
    canonical = json.dumps({"pipeline": pipeline, **request}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, request TEXT NOT NULL, state TEXT NOT NULL,
  created REAL NOT NULL, updated REAL NOT NULL, error TEXT NOT NULL DEFAULT '',
  summary TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS items (
  job_id TEXT NOT NULL, key TEXT NOT NULL, position INTEGER NOT NULL, payload TEXT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
  outputs TEXT NOT NULL DEFAULT '{}', updated REAL NOT NULL, interrupted INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, key)
);
"""
# `interrupted`: runs of the item that never ended, because the gateway crashed, was killed or hung while it
# ran; counted when the job resumes, reset when the item ends. Stores written before it get the column added.
_MIGRATIONS = ("ALTER TABLE items ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",)
POISONED = "failed after {attempts} attempts: the gateway stopped or hung while this item ran, each time"


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(items)")}
        if "interrupted" not in columns:
            for sql in _MIGRATIONS:
                self._db.execute(sql)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # -- jobs -----------------------------------------------------------------------------------------
    def open_job(
        self,
        pipeline: str,
        request: dict[str, Any],
        items: list[Item],
        max_interrupted: int = 3,
        automatic: bool = False,
    ) -> tuple[JobRecord, bool]:
        """Create the job with all its items, or return the existing one (resumed: failed and interrupted
        items go back to pending, done ones stay done). Returns (job, resumed).

        An item whose runs were cut short `max_interrupted` times (it crashes or wedges the gateway) is failed
        with its attempt count instead; an `automatic` resume (the gateway restarting) leaves such an item failed,
        a user's rerun tries it once more."""
        jid = job_id(pipeline, request)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT id FROM jobs WHERE id = ?", (jid,)).fetchone()
                resumed = row is not None
                if resumed:
                    self._db.execute("UPDATE jobs SET state = ?, updated = ?, error = '' WHERE id = ?",
                                     (JobState.QUEUED.value, now, jid))  # fmt: skip
                    running, failed = ItemState.RUNNING.value, ItemState.FAILED.value
                    self._db.execute(
                        "UPDATE items SET interrupted = interrupted + 1 WHERE job_id = ? AND state = ?", (jid, running)
                    )
                    self._db.execute(
                        "UPDATE items SET state = ?, error = REPLACE(?, '{attempts}', attempts), updated = ? "
                        "WHERE job_id = ? AND state = ? AND interrupted >= ?",
                        (failed, POISONED, now, jid, running, max_interrupted),
                    )
                    keep = max_interrupted if automatic else 1 << 62  # poisoned items stay failed on a restart
                    self._db.execute(
                        "UPDATE items SET state = ?, updated = ? WHERE job_id = ? AND "
                        "(state = ? OR (state = ? AND interrupted < ?))",
                        (ItemState.PENDING.value, now, jid, running, failed, keep),
                    )
                else:
                    self._db.execute(
                        "INSERT INTO jobs (id, pipeline, request, state, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                        (jid, pipeline, json.dumps(request, sort_keys=True), JobState.QUEUED.value, now, now),
                    )
                self._db.executemany(
                    "INSERT OR IGNORE INTO items (job_id, key, position, payload, state, updated) VALUES (?,?,?,?,?,?)",
                    [(jid, i.key, i.position, json.dumps(i.payload), ItemState.PENDING.value, now) for i in items],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        job = self.get_job(jid)
        assert job is not None
        return job, resumed

    def set_job_state(self, jid: str, state: JobState, error: str = "", summary: dict[str, str] | None = None) -> None:
        self._write(
            "UPDATE jobs SET state = ?, updated = ?, error = ?, summary = COALESCE(?, summary) WHERE id = ?",
            (state.value, time.time(), error, None if summary is None else json.dumps(summary), jid),
        )

    def get_job(self, jid: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, pipeline, request, state, created, updated, error, summary FROM jobs WHERE id = ?", (jid,)
            ).fetchone()
            if row is None:
                return None
            counts = dict(
                self._db.execute("SELECT state, COUNT(*) FROM items WHERE job_id = ? GROUP BY state", (jid,)).fetchall()
            )
        request, summary = json.loads(row[2]), json.loads(row[7])
        return JobRecord(row[0], row[1], request, JobState(row[3]), row[4], row[5], row[6], counts, summary)

    def list_jobs(self, limit: int = 100) -> list[JobRecord]:
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs ORDER BY created DESC LIMIT ?", (limit,))]
        return [job for jid in ids if (job := self.get_job(jid)) is not None]

    # -- items ----------------------------------------------------------------------------------------
    def items(self, jid: str, state: ItemState | None = None) -> list[Item]:
        sql = "SELECT key, position, payload, state, attempts, error, outputs FROM items WHERE job_id = ?"
        args: tuple[Any, ...] = (jid,)
        if state is not None:
            sql += " AND state = ?"
            args += (state.value,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY position", args).fetchall()
        return [Item(r[0], r[1], json.loads(r[2]), ItemState(r[3]), r[4], r[5], json.loads(r[6])) for r in rows]

    def start_item(self, jid: str, key: str) -> None:
        self._write(
            "UPDATE items SET state = ?, attempts = attempts + 1, updated = ? WHERE job_id = ? AND key = ?",
            (ItemState.RUNNING.value, time.time(), jid, key),
        )

    def finish_item(self, jid: str, key: str, outputs: dict[str, Any]) -> None:
        """Call only after the item's files are in place (written atomically)."""
        self._write(
            "UPDATE items SET state = ?, outputs = ?, error = '', interrupted = 0, updated = ? "
            "WHERE job_id = ? AND key = ?",
            (ItemState.DONE.value, json.dumps(outputs), time.time(), jid, key),
        )

    def fail_item(self, jid: str, key: str, error: str) -> None:
        self._write(
            "UPDATE items SET state = ?, error = ?, interrupted = 0, updated = ? WHERE job_id = ? AND key = ?",
            (ItemState.FAILED.value, error, time.time(), jid, key),
        )

    def requeue_item(self, jid: str, key: str) -> None:
        """Back to pending (the job was cancelled or the gateway is stopping while it ran)."""
        self._write(
            "UPDATE items SET state = ?, updated = ? WHERE job_id = ? AND key = ?",
            (ItemState.PENDING.value, time.time(), jid, key),
        )
