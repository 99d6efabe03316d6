"""The session store: one DuckDB file per session, and the only module that writes SQL.

Why it looks like this:
- Decisions are an append-only log. A clip's current label, exclusion and quarantine state are
  derived from it (the latest effective decision that sets each field); nothing is updated in
  place, so every change can be audited and undone, and the state "as of" any decision id can
  be rebuilt exactly.
- Decision ids and import batches draw from one sequence (`event_seq`), so "as of decision D"
  also fixes which clips existed: a training set frozen at D can be rebuilt exactly.
- One writing process per session (DESIGN.md): an exclusive lock file holds the writer's pid,
  so a second process gets a readable "open in another process (pid N)" instead of a DuckDB
  lock trace. Child jobs never open the store; they read frozen manifests. Commands that only
  read (stats, export) open a snapshot instead, so they work while a writer holds the session.
- Every acknowledged write is its own committed transaction (DuckDB syncs its WAL on commit),
  so a killed process loses nothing it acknowledged.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from core.clip_sets import SPLIT_NAMES, check_clip_set_name

DB_FILENAME = "workbench.duckdb"
LOCK_FILENAME = "workbench.lock"
# as_of value meaning "everything": larger than any id the sequence will hand out.
LATEST = 2**62

DECISION_ACTIONS = ("tag", "relabel", "exclude", "include", "quarantine", "release", "keep", "note", "move", "undo")
RULE_ACTIONS = ("relabel", "exclude", "keep")
ANNOTATION_ACTIONS = ("tag", "relabel", "exclude", "keep")  # what a blind annotation may hold back
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
CLIP_COLUMNS = ("path", "duration_s", "sample_rate_hz", "channels", "split", "fold", "source_group",
                "original_label", "status", "reason", "metadata", "parent_clip_id")
# The split of inbox clips (pipelines/inbox.py): unlabelled audio waiting to be scored and labelled.
# A clip there never trains and is never evaluated; labelling one moves it (a 'move' decision).
UNLABELLED_SPLIT = "unlabelled"


class StoreError(RuntimeError):
    """A session store problem explained for the user."""


class SessionInUseError(StoreError):
    """Another process holds the session's write lock."""


class SchemaVersionError(StoreError):
    """The session file was written by a newer Earmark."""


# --- schema ----------------------------------------------------------------------------
# Each migration is a list of statements applied in one transaction; never edit a released
# migration, append a new one.
# The current_labels view always shows the latest labels query. DuckDB binds a view when it is
# created, so the view is (re)built once, by the last pending migration that asks for it: an
# early migration cannot bind columns that a later one adds.
REFRESH_LABELS_VIEW = "CREATE OR REPLACE VIEW current_labels AS {labels_sql}"
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE SEQUENCE event_seq START 1",
        "CREATE SEQUENCE dataset_seq START 1",
        "CREATE SEQUENCE clip_seq START 1",
        "CREATE SEQUENCE quarantine_seq START 1",
        "CREATE SEQUENCE promotion_seq START 1",
        """CREATE TABLE datasets (
            id INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, root VARCHAR NOT NULL,
            layout VARCHAR NOT NULL, class_map VARCHAR, options VARCHAR, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE clips (
            id BIGINT PRIMARY KEY, dataset_id INTEGER NOT NULL, path VARCHAR NOT NULL,
            duration_s DOUBLE, sample_rate_hz INTEGER, channels INTEGER,
            split VARCHAR, fold VARCHAR, source_group VARCHAR, original_label VARCHAR,
            status VARCHAR NOT NULL, reason VARCHAR, metadata VARCHAR, parent_clip_id BIGINT,
            import_seq BIGINT NOT NULL, created_at TIMESTAMP NOT NULL,
            UNIQUE (dataset_id, path))""",
        """CREATE TABLE decisions (
            id BIGINT PRIMARY KEY, clip_id BIGINT NOT NULL, annotator VARCHAR NOT NULL,
            action VARCHAR NOT NULL, tag VARCHAR, rule VARCHAR, new_label VARCHAR,
            set_excluded BOOLEAN, set_quarantined BOOLEAN, note VARCHAR, undoes BIGINT,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE relabel_rules (
            tag VARCHAR PRIMARY KEY, action VARCHAR NOT NULL, target_label VARCHAR,
            keep_quarantined BOOLEAN NOT NULL, description VARCHAR, hotkey VARCHAR,
            updated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE quarantine (
            id BIGINT PRIMARY KEY, clip_id BIGINT NOT NULL, audit_run_id VARCHAR, method VARCHAR NOT NULL,
            reason VARCHAR NOT NULL, score DOUBLE, rank INTEGER, decision_id BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE runs (
            id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, status VARCHAR NOT NULL, preset VARCHAR,
            config VARCHAR, parent_run_id VARCHAR, manifest_decision_id BIGINT, run_dir VARCHAR,
            error VARCHAR, summary VARCHAR, created_at TIMESTAMP NOT NULL, finished_at TIMESTAMP)""",
        """CREATE TABLE run_metrics (
            run_id VARCHAR NOT NULL, step INTEGER, epoch DOUBLE, name VARCHAR NOT NULL, value DOUBLE)""",
        """CREATE TABLE metrics (
            run_id VARCHAR NOT NULL, split VARCHAR NOT NULL, name VARCHAR NOT NULL,
            class_label VARCHAR, value DOUBLE)""",
        """CREATE TABLE predictions (
            run_id VARCHAR NOT NULL, clip_id BIGINT NOT NULL, split VARCHAR, label VARCHAR,
            predicted VARCHAR, confidence DOUBLE, probs FLOAT[])""",
        """CREATE TABLE promotions (
            id BIGINT PRIMARY KEY, run_id VARCHAR, action VARCHAR NOT NULL, actor VARCHAR NOT NULL,
            reason VARCHAR, report VARCHAR, created_at TIMESTAMP NOT NULL)""",
        "CREATE INDEX decisions_clip ON decisions (clip_id)",
        "CREATE INDEX predictions_run ON predictions (run_id)",
        # The current state of every clip, for ad-hoc queries; labels(as_of=...) is the
        # parameterised form of the same query.
        REFRESH_LABELS_VIEW,
    ]),
    (2, [
        # Derived clips (augmented copies) follow their parent: the view picks up the new query.
        REFRESH_LABELS_VIEW,
        "CREATE INDEX clips_parent ON clips (parent_clip_id)",
    ]),
    (3, [
        # Metrics per group of clip metadata (SNR bin, duration bin, source...), per run and split.
        """CREATE TABLE breakdowns (
            run_id VARCHAR NOT NULL, split VARCHAR NOT NULL, column_name VARCHAR NOT NULL,
            group_name VARCHAR NOT NULL, position INTEGER NOT NULL, n INTEGER NOT NULL,
            accuracy DOUBLE, f1_macro DOUBLE)""",
    ]),
    (4, [
        # VAD hygiene (B6): what a voice-activity detector heard in each clip, per hygiene run.
        # frame_scores: per-frame speech (webrtc: 0/1; Silero: probability), frame_s apart.
        """CREATE TABLE vad_measurements (
            run_id VARCHAR NOT NULL, clip_id BIGINT NOT NULL, detector VARCHAR NOT NULL,
            fraction DOUBLE NOT NULL, frame_s DOUBLE NOT NULL, frame_scores FLOAT[])""",
        "CREATE INDEX vad_measurements_clip ON vad_measurements (clip_id)",
    ]),
    (5, [
        # A decision can move a clip to another split or source group (an inbox clip joining
        # training, a near-duplicate joining its partner's group): split and group are derived
        # from the log like the label, so every move is audited and undoable.
        "ALTER TABLE decisions ADD COLUMN set_split VARCHAR",
        "ALTER TABLE decisions ADD COLUMN set_group VARCHAR",
        REFRESH_LABELS_VIEW,
    ]),
    (6, [
        # Named clip sets (B4: an expanded test set beside the test split). Append-only: a set
        # replaced keeps its earlier versions; a version's id comes from event_seq, so "as of
        # decision D" also fixes which version of each set was current.
        """CREATE TABLE clip_sets (
            id BIGINT PRIMARY KEY, name VARCHAR NOT NULL, actor VARCHAR NOT NULL, settings VARCHAR,
            replaces BIGINT, created_at TIMESTAMP NOT NULL)""",
        "CREATE TABLE clip_set_members (set_id BIGINT NOT NULL, clip_id BIGINT NOT NULL)",
        "CREATE INDEX clip_set_members_set ON clip_set_members (set_id)",
    ]),
    (7, [
        # Near-duplicate search (issue 17): every pair of clips a run found above its thresholds,
        # with both clips' splits as frozen (cross-split pairs are leakage candidates).
        # similarity: of the embeddings (cosine); match: of the frame-by-frame patterns at the best lag.
        """CREATE TABLE duplicate_pairs (
            run_id VARCHAR NOT NULL, clip_a BIGINT NOT NULL, clip_b BIGINT NOT NULL, similarity DOUBLE NOT NULL,
            match DOUBLE NOT NULL, split_a VARCHAR, split_b VARCHAR)""",
        "CREATE INDEX duplicate_pairs_a ON duplicate_pairs (clip_a)",
        "CREATE INDEX duplicate_pairs_b ON duplicate_pairs (clip_b)",
    ]),
    (9, [
        # Blind double annotation: a review queue can ask N annotators per clip. Their answers are
        # a log of their own (append-only; a withdrawal is a row naming the one it withdraws), so
        # nothing that derives a clip's label, history or queue from `decisions` sees them or shows
        # them to the next annotator. What settles the clip (their consensus, or an adjudicator) is
        # an ordinary decision, linked here to the annotations it settled.
        """CREATE TABLE annotation_modes (
            id BIGINT PRIMARY KEY, queue VARCHAR NOT NULL, annotators INTEGER NOT NULL, set_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE annotations (
            id BIGINT PRIMARY KEY, clip_id BIGINT NOT NULL, queue VARCHAR NOT NULL, annotator VARCHAR NOT NULL,
            action VARCHAR NOT NULL, tag VARCHAR, rule VARCHAR, new_label VARCHAR, set_excluded BOOLEAN,
            set_quarantined BOOLEAN, note VARCHAR, withdraws BIGINT, created_at TIMESTAMP NOT NULL)""",
        "CREATE INDEX annotations_clip ON annotations (clip_id)",
        """CREATE TABLE annotation_resolutions (
            decision_id BIGINT PRIMARY KEY, clip_id BIGINT NOT NULL, kind VARCHAR NOT NULL,
            annotation_ids BIGINT[] NOT NULL, created_at TIMESTAMP NOT NULL)""",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Latest effective decision per field; a decision is effective unless an undo at or before
# as_of names it. One pass over the log (arg_max ... FILTER), no per-row Python. A derived clip
# (an augmented copy, parent_clip_id set) follows its parent's current label and split, and is
# out of training whenever its parent is excluded or quarantined.
_LABELS_SQL = """
WITH undone AS (
    SELECT undoes AS id FROM decisions WHERE action = 'undo' AND id <= {as_of}
), effective AS (
    SELECT d.* FROM decisions d ANTI JOIN undone u ON d.id = u.id
    WHERE d.id <= {as_of} AND d.action <> 'undo'
), state AS (
    SELECT clip_id,
        arg_max(new_label, id) FILTER (WHERE new_label IS NOT NULL) AS new_label,
        arg_max(set_excluded, id) FILTER (WHERE set_excluded IS NOT NULL) AS excluded,
        arg_max(set_quarantined, id) FILTER (WHERE set_quarantined IS NOT NULL) AS quarantined,
        arg_max(set_split, id) FILTER (WHERE set_split IS NOT NULL) AS moved_split,
        arg_max(set_group, id) FILTER (WHERE set_group IS NOT NULL) AS moved_group,
        max(id) AS last_decision_id
    FROM effective GROUP BY clip_id
)
SELECT c.id AS clip_id, c.dataset_id, c.path,
       CASE WHEN c.parent_clip_id IS NULL THEN coalesce(s.moved_split, c.split)
            ELSE coalesce(ps.moved_split, p.split, c.split) END AS split,
       c.fold,
       CASE WHEN c.parent_clip_id IS NULL THEN coalesce(s.moved_group, c.source_group)
            ELSE coalesce(ps.moved_group, c.source_group) END AS source_group,
       c.status,
       c.original_label, c.parent_clip_id, c.duration_s,
       CASE WHEN c.parent_clip_id IS NULL THEN coalesce(s.new_label, c.original_label)
            ELSE coalesce(ps.new_label, p.original_label) END AS label,
       coalesce(s.excluded, false) OR coalesce(ps.excluded, false) AS excluded,
       coalesce(s.quarantined, false) OR coalesce(ps.quarantined, false) AS quarantined,
       s.last_decision_id
FROM clips c LEFT JOIN state s ON s.clip_id = c.id
     LEFT JOIN clips p ON p.id = c.parent_clip_id
     LEFT JOIN state ps ON ps.clip_id = c.parent_clip_id
WHERE c.import_seq <= {as_of}
"""


@dataclass(frozen=True)
class Rule:
    tag: str
    action: str
    target_label: str | None
    keep_quarantined: bool
    description: str = ""
    hotkey: str | None = None

    def check(self) -> None:
        """Refuse a rule Review could not apply (ValueError naming the field): the one check for
        rules typed in the Data tab, read from a rules file, or written by the store."""
        if not isinstance(self.tag, str) or not self.tag.strip():
            raise ValueError(f"rule tag: {self.tag!r} must be a non-empty name")
        if self.action not in RULE_ACTIONS:
            raise ValueError(f"rule {self.tag!r}: action must be one of {RULE_ACTIONS}, got {self.action!r}")
        if self.action == "relabel" and not self.target_label:
            raise ValueError(f"rule {self.tag!r}: a relabel rule needs a target_label")
        if self.action != "relabel" and self.target_label:
            raise ValueError(f"rule {self.tag!r}: only a relabel rule has a target_label ({self.action} keeps the label)")
        if not isinstance(self.keep_quarantined, bool):
            raise ValueError(f"rule {self.tag!r}: keep_quarantined must be true or false, got {self.keep_quarantined!r}")
        if self.hotkey is not None and not (isinstance(self.hotkey, str) and len(self.hotkey) == 1 and self.hotkey.isdigit()):
            raise ValueError(f"rule {self.tag!r}: hotkey must be one digit, got {self.hotkey!r}")

    def describe(self) -> str:
        """The rule as recorded on each decision that applied it."""
        target = f" {self.target_label}" if self.target_label else ""
        quarantine = "keep quarantined" if self.keep_quarantined else "release"
        return f"{self.tag} -> {self.action}{target}, {quarantine}"


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


class Store:
    """A session's DuckDB store. Open with `Store.open(session_dir)`; close when done.

    Thread-safe within the process (one connection behind a lock; every call is short).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, session_dir: Path, lock_file,
                 snapshot_dir: Path | None = None) -> None:
        self._con = con
        self.session_dir = session_dir
        self._lock_file = lock_file
        self._snapshot_dir = snapshot_dir  # the private copy a snapshot reads; deleted on close
        self._mutex = threading.RLock()

    # --- opening and closing ---------------------------------------------------------
    @classmethod
    def open(cls, session_dir: str | Path, *, create: bool = True) -> "Store":
        """Open (and migrate) the session in session_dir as its one writer."""
        session_dir = Path(session_dir).expanduser().resolve()  # child jobs run from another cwd
        db_path = _session_db(session_dir)
        if not db_path.exists():
            if not create:
                raise _no_session(session_dir)
            _make_session_dir(session_dir)
        lock_file = _acquire_lock(session_dir)
        try:
            con = _connect(db_path)
        except StoreError:
            lock_file.close()
            raise
        store = cls(con, session_dir, lock_file)
        try:
            store._migrate()
        except Exception:
            store.close()
            raise
        return store

    @classmethod
    def open_snapshot(cls, session_dir: str | Path) -> "Store":
        """Open a read-only copy of the session, for commands that only read (stats, export).

        It works while a server or CLI job holds the session: DuckDB refuses even a read-only
        attach to a file another process has open for writing, so the database and its WAL
        are copied to a temporary folder and the copy is opened (brought to the current schema
        first, then read-only). The session is never written and its lock never taken; the
        copy holds every write the holder committed before it was taken. close() deletes it.
        """
        session_dir = Path(session_dir).expanduser().resolve()
        db_path = _session_db(session_dir)
        if not db_path.is_file():
            raise _no_session(session_dir)
        folder = Path(tempfile.mkdtemp(prefix="earmark-snapshot-"))
        try:
            copy = _copy_unchanged(db_path, folder)
            with cls(_connect(copy, shown_as=db_path), session_dir, None) as upgrade:
                upgrade._migrate()  # replays the WAL into the copy; upgrades an older session's copy
            con = _connect(copy, shown_as=db_path, read_only=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(con, session_dir, None, snapshot_dir=folder)

    def close(self) -> None:
        with self._mutex:
            if self._con is not None:
                self._con.close()
                self._con = None
            if self._lock_file is not None:
                self._lock_file.close()  # closing releases the flock
                self._lock_file = None
            if self._snapshot_dir is not None:
                shutil.rmtree(self._snapshot_dir, ignore_errors=True)
                self._snapshot_dir = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._scalar("SELECT max(version) FROM schema_version"))

    def _migrate(self) -> None:
        with self._mutex:
            self._exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
            current = self._fetch_one("SELECT coalesce(max(version), 0) FROM schema_version")[0]
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"session {self.session_dir} uses schema version {current}, but this Earmark knows only up "
                    f"to version {SCHEMA_VERSION}: upgrade Earmark to open it")
            pending = [(version, statements) for version, statements in MIGRATIONS if version > current]
            view_at = max((version for version, statements in pending if REFRESH_LABELS_VIEW in statements), default=None)
            for version, statements in pending:
                with self._transaction():
                    for statement in statements:
                        if statement == REFRESH_LABELS_VIEW and version != view_at:
                            continue
                        self._exec(statement.replace("{labels_sql}", _LABELS_SQL.format(as_of=LATEST)))
                    self._exec("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])

    # --- small helpers ------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, **frames: pd.DataFrame) -> Iterator[None]:
        """One all-or-nothing write (the caller holds the mutex): `frames` are visible to its SQL
        under their names and are dropped however the block ends."""
        for name, frame in frames.items():
            self._con.register(name, frame)
        try:
            self._exec("BEGIN TRANSACTION")
            try:
                yield
                self._exec("COMMIT")
            except BaseException:
                self._exec("ROLLBACK")
                raise
        finally:
            for name in frames:
                self._con.unregister(name)

    def _exec(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> duckdb.DuckDBPyConnection:
        """Every statement goes through here: parameters only, numpy scalars made plain."""
        with self._mutex:
            return self._con.execute(sql, _plain_params(params))

    def _fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """First row or None. fetchall, not fetchone: DuckDB 2 refuses new work on a
        connection while an earlier result is unfinished."""
        with self._mutex:
            rows = self._exec(sql, params).fetchall()
        return rows[0] if rows else None

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._fetch_one(sql, params)
        return None if row is None else row[0]

    def _df(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
        with self._mutex:
            return self._exec(sql, params).df()

    def _next_event(self) -> int:
        return int(self._fetch_one("SELECT nextval('event_seq')")[0])

    # --- datasets and clips -----------------------------------------------------------
    def add_dataset(self, *, name: str, root: str | Path, layout: str, class_map: dict | None = None,
                    options: dict | None = None) -> int:
        """Register a dataset, or return the id of the one with this name (same root only)."""
        root = str(Path(root).resolve())
        with self._mutex:
            row = self._fetch_one("SELECT id, root FROM datasets WHERE name = ?", [name])
            if row is not None:
                if row[1] != root:
                    raise StoreError(f"dataset {name!r} is already imported from {row[1]}; choose another name for {root}")
                return int(row[0])
            dataset_id = self._fetch_one("SELECT nextval('dataset_seq')")[0]
            self._exec("INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [dataset_id, name, root, layout, _json(class_map), _json(options), _now()])
            return int(dataset_id)

    def datasets(self) -> pd.DataFrame:
        return self._df("SELECT * FROM datasets ORDER BY id")

    def dataset_roots(self) -> dict[int, Path]:
        return {int(r.id): Path(r.root) for r in self.datasets().itertuples()}

    def existing_paths(self, dataset_id: int) -> set[str]:
        with self._mutex:
            rows = self._exec("SELECT path FROM clips WHERE dataset_id = ?", [dataset_id]).fetchall()
        return {r[0] for r in rows}

    def add_clips(self, dataset_id: int, clips: pd.DataFrame) -> int:
        """Insert clips (columns from CLIP_COLUMNS; path relative to the dataset root).

        Paths already in the dataset are skipped, so re-importing adds nothing twice.
        Returns the number of clips added.
        """
        missing = [c for c in ("path", "status") if c not in clips.columns]
        if missing:
            raise ValueError(f"clips is missing columns {missing}; expected some of {CLIP_COLUMNS}")
        unknown = sorted(set(clips.columns) - set(CLIP_COLUMNS))
        if unknown:
            raise ValueError(f"clips has unknown columns {unknown}; allowed: {CLIP_COLUMNS}")
        frame = clips.reindex(columns=list(CLIP_COLUMNS)).drop_duplicates(subset="path")
        if frame.empty:
            return 0
        with self._mutex:
            with self._transaction(incoming_clips=frame):
                import_seq = self._next_event()
                before = self._fetch_one("SELECT count(*) FROM clips")[0]
                self._exec(
                    """INSERT INTO clips
                       SELECT nextval('clip_seq'), ?, i.path, i.duration_s, i.sample_rate_hz, i.channels,
                              i.split, i.fold, i.source_group, i.original_label, i.status, i.reason,
                              i.metadata, i.parent_clip_id, ?, ?
                       FROM incoming_clips i
                       WHERE NOT EXISTS (SELECT 1 FROM clips c WHERE c.dataset_id = ? AND c.path = i.path)""",
                    [dataset_id, import_seq, _now(), dataset_id])
                added = self._fetch_one("SELECT count(*) FROM clips")[0] - before
        return int(added)

    def clips(self, *, dataset_id: int | None = None, status: str | None = None) -> pd.DataFrame:
        return self._df(
            """SELECT c.*, d.name AS dataset, d.root AS dataset_root FROM clips c JOIN datasets d ON d.id = c.dataset_id
               WHERE (?::INTEGER IS NULL OR c.dataset_id = ?) AND (?::VARCHAR IS NULL OR c.status = ?)
               ORDER BY c.id""", [dataset_id, dataset_id, status, status])

    def clip(self, clip_id: int) -> dict[str, Any]:
        frame = self._df(
            """SELECT c.*, d.name AS dataset, d.root AS dataset_root FROM clips c JOIN datasets d ON d.id = c.dataset_id
               WHERE c.id = ?""", [clip_id])
        if frame.empty:
            raise StoreError(f"no clip with id {clip_id}")
        return frame.iloc[0].to_dict()

    def clip_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM clips"))

    def dataset_summary(self) -> pd.DataFrame:
        """Clips per dataset, label, split and status (original labels), for stats views."""
        return self._df(
            """SELECT d.name AS dataset, c.original_label AS label, c.split, c.status,
                      count(*) AS clips, sum(c.duration_s) AS seconds
               FROM clips c JOIN datasets d ON d.id = c.dataset_id
               GROUP BY ALL ORDER BY ALL""")

    # --- decisions ----------------------------------------------------------------------
    def record_decision(self, clip_id: int, *, annotator: str, action: str, tag: str | None = None,
                        rule: str | None = None, new_label: str | None = None,
                        set_excluded: bool | None = None, set_quarantined: bool | None = None,
                        note: str | None = None, set_split: str | None = None, set_group: str | None = None) -> int:
        """Append one decision and commit it; returns its id once durable."""
        _check_decision(action, annotator)
        with self._mutex:
            return self._insert_decision(clip_id, annotator, action, tag, rule, new_label, set_excluded,
                                         set_quarantined, note, set_split, set_group)

    def _insert_decision(self, clip_id: int, *values: Any) -> int:
        """Append one decision (values in the table's order from annotator to set_group, without
        undoes and created_at); the caller holds the mutex and has checked the action."""
        if self._fetch_one("SELECT 1 FROM clips WHERE id = ?", [clip_id]) is None:
            raise StoreError(f"no clip with id {clip_id}")
        decision_id = self._next_event()
        *fields, set_split, set_group = values
        self._exec("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                   [decision_id, clip_id, *fields, _now(), set_split, set_group])
        return decision_id

    def record_decisions(self, decisions: pd.DataFrame) -> list[int]:
        """Append many decisions in one transaction (e.g. an audit's quarantine proposals).

        Columns: clip_id, annotator, action and optionally tag, rule, new_label, set_excluded,
        set_quarantined, note, set_split, set_group. Returns the new ids in row order.
        """
        columns = ["clip_id", "annotator", "action", "tag", "rule", "new_label", "set_excluded", "set_quarantined", "note",
                   "set_split", "set_group"]
        unknown = sorted(set(decisions.columns) - set(columns))
        if unknown:
            raise ValueError(f"decisions has unknown columns {unknown}; allowed: {columns}")
        frame = decisions.reindex(columns=columns)
        for action in frame["action"].unique():
            _check_decision(action, "batch")
        if frame["annotator"].isna().any() or (frame["annotator"].astype(str).str.strip() == "").any():
            raise ValueError("annotator must be a non-empty name on every decision")
        if frame.empty:
            return []
        frame = frame.astype({"set_excluded": "boolean", "set_quarantined": "boolean", "set_split": "string", "set_group": "string"})
        frame.insert(0, "row_order", range(len(frame)))
        with self._mutex:
            with self._transaction(incoming_decisions=frame):
                unknown_clips = self._fetch_one(
                    "SELECT count(*) FROM incoming_decisions i ANTI JOIN clips c ON c.id = i.clip_id")[0]
                if unknown_clips:
                    raise StoreError(f"{unknown_clips} decisions name clips that do not exist")
                first = self._fetch_one("SELECT max(id) FROM decisions")[0]
                self._exec(
                    """INSERT INTO decisions
                       SELECT nextval('event_seq'), clip_id, annotator, action, tag, rule, new_label,
                              set_excluded, set_quarantined, note, NULL, ?, set_split, set_group
                       FROM (SELECT * FROM incoming_decisions ORDER BY row_order)""", [_now()])
                ids = [r[0] for r in self._exec(
                    "SELECT id FROM decisions WHERE id > ? ORDER BY id", [first or 0]).fetchall()]
        return ids

    def undo(self, decision_id: int, *, annotator: str, note: str | None = None) -> int:
        """Append a decision that reverses decision_id's effects; returns the new id."""
        _check_decision("undo", annotator)
        with self._mutex:
            row = self._fetch_one("SELECT clip_id, action FROM decisions WHERE id = ?", [decision_id])
            if row is None:
                raise StoreError(f"no decision with id {decision_id}")
            if row[1] == "undo":
                raise StoreError(f"decision {decision_id} is itself an undo; record the decision again instead")
            if self._fetch_one("SELECT 1 FROM decisions WHERE action = 'undo' AND undoes = ?", [decision_id]):
                raise StoreError(f"decision {decision_id} is already undone")
            undo_id = self._next_event()
            self._exec(
                "INSERT INTO decisions VALUES (?, ?, ?, 'undo', NULL, NULL, NULL, NULL, NULL, ?, ?, ?, NULL, NULL)",
                [undo_id, row[0], annotator, note, decision_id, _now()])
        return undo_id

    def last_decision_id(self) -> int:
        """The newest event id (decision or import): the 'as of' to freeze a manifest at."""
        return int(self._scalar("SELECT coalesce(max(id), 0) FROM (SELECT max(id) AS id FROM decisions UNION ALL "
                                "SELECT max(import_seq) FROM clips UNION ALL SELECT max(id) FROM clip_sets)"))

    def decision_count(self) -> int:
        return int(self._scalar("SELECT count(*) FROM decisions"))

    def decisions(self, *, clip_id: int | None = None, since_id: int | None = None,
                  annotator: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """The log, newest first, with whether each decision has since been undone."""
        return self._df(
            """SELECT d.*, (u.id IS NOT NULL) AS undone, u.id AS undone_by
               FROM decisions d LEFT JOIN decisions u ON u.action = 'undo' AND u.undoes = d.id
               WHERE (?::BIGINT IS NULL OR d.clip_id = ?) AND (?::BIGINT IS NULL OR d.id > ?)
                 AND (?::VARCHAR IS NULL OR d.annotator = ?)
               ORDER BY d.id DESC LIMIT ?""",
            [clip_id, clip_id, since_id, since_id, annotator, annotator, limit if limit is not None else LATEST])

    def labels(self, *, as_of: int | None = None) -> pd.DataFrame:
        """Every clip's state (label, excluded, quarantined) as of a decision id (default: now)."""
        bound = LATEST if as_of is None else int(as_of)
        # Sorting the fetched frame costs a few ms; ORDER BY in the query costs ~30 ms at 100k clips.
        frame = self._df(_LABELS_SQL.format(as_of="$as_of"), {"as_of": bound})
        return frame.sort_values("clip_id", ignore_index=True)

    def clip_state(self, clip_id: int) -> dict[str, Any]:
        frame = self._df(_LABELS_SQL.format(as_of="$as_of") + " AND c.id = $clip_id", {"as_of": LATEST, "clip_id": clip_id})
        if frame.empty:
            raise StoreError(f"no clip with id {clip_id}")
        return frame.iloc[0].to_dict()

    # --- blind annotation ---------------------------------------------------------------------
    # Written by pipelines/double_annotation.py. Ids come from event_seq, so annotations, decisions
    # and imports share one order.
    def set_annotation_mode(self, queue: str, *, annotators: int, set_by: str) -> int:
        """Ask `annotators` people per clip in the review queue `queue` from now on (1: one, as usual)."""
        if not isinstance(annotators, int) or isinstance(annotators, bool) or not 1 <= annotators <= 10:
            raise ValueError(f"annotators per clip must be a whole number from 1 to 10, got {annotators!r}")
        if not set_by or not set_by.strip():
            raise ValueError("set_by must be a non-empty name")
        with self._mutex:
            mode_id = self._next_event()
            self._exec("INSERT INTO annotation_modes VALUES (?, ?, ?, ?, ?)", [mode_id, queue, annotators, set_by, _now()])
        return mode_id

    def annotation_modes(self) -> pd.DataFrame:
        """The latest setting of each queue that was ever set: queue, annotators, set_by, created_at."""
        return self._df("""SELECT queue, annotators, set_by, created_at FROM annotation_modes
                           QUALIFY row_number() OVER (PARTITION BY queue ORDER BY id DESC) = 1 ORDER BY queue""")

    def record_annotation(self, clip_id: int, *, queue: str, annotator: str, action: str, tag: str | None = None,
                          rule: str | None = None, new_label: str | None = None, set_excluded: bool | None = None,
                          set_quarantined: bool | None = None, note: str | None = None) -> int:
        """Append one blind annotation: the decision fields it would record, held back."""
        if action not in ANNOTATION_ACTIONS:
            raise ValueError(f"an annotation's action must be one of {ANNOTATION_ACTIONS}, got {action!r}")
        _check_decision(action, annotator)
        with self._mutex:
            if self._fetch_one("SELECT 1 FROM clips WHERE id = ?", [clip_id]) is None:
                raise StoreError(f"no clip with id {clip_id}")
            annotation_id = self._next_event()
            self._exec("INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                       [annotation_id, clip_id, queue, annotator, action, tag, rule, new_label, set_excluded,
                        set_quarantined, note, _now()])
        return annotation_id

    def withdraw_annotation(self, annotation_id: int, *, annotator: str) -> int:
        """Withdraw one's own annotation while its clip is unsettled (an undo); returns the new row's id."""
        with self._mutex:
            row = self._fetch_one("SELECT clip_id, queue, annotator FROM annotations WHERE id = ? AND withdraws IS NULL",
                                  [annotation_id])
            if row is None:
                raise StoreError(f"no annotation with id {annotation_id}")
            if row[2] != annotator:
                raise StoreError(f"annotation {annotation_id} is {row[2]}'s; only they can withdraw it")
            state = self.annotations(clip_id=row[0]).set_index("id").loc[annotation_id]
            if state.withdrawn or not pd.isna(state.settled_by):
                raise StoreError(f"annotation {annotation_id} is already {'withdrawn' if state.withdrawn else 'settled'}")
            withdrawal_id = self._next_event()
            self._exec("""INSERT INTO annotations (id, clip_id, queue, annotator, action, withdraws, created_at)
                          VALUES (?, ?, ?, ?, 'undo', ?, ?)""", [withdrawal_id, row[0], row[1], annotator, annotation_id, _now()])
        return withdrawal_id

    def annotations(self, *, clip_id: int | None = None, annotator: str | None = None) -> pd.DataFrame:
        """Every annotation (withdrawals left out), oldest first, with `withdrawn` and `settled_by`:
        the decision that settled it, unless that decision was undone (then it is open again)."""
        return self._df(
            """WITH undone AS (SELECT undoes AS id FROM decisions WHERE action = 'undo'),
               settled AS (SELECT r.decision_id, unnest(r.annotation_ids) AS annotation_id
                           FROM annotation_resolutions r ANTI JOIN undone u ON u.id = r.decision_id)
               SELECT a.*, (w.id IS NOT NULL) AS withdrawn, s.decision_id AS settled_by
               FROM annotations a LEFT JOIN annotations w ON w.withdraws = a.id
                    LEFT JOIN settled s ON s.annotation_id = a.id
               WHERE a.withdraws IS NULL AND (?::BIGINT IS NULL OR a.clip_id = ?) AND (?::VARCHAR IS NULL OR a.annotator = ?)
               ORDER BY a.id""", [clip_id, clip_id, annotator, annotator])

    def annotation_resolutions(self) -> pd.DataFrame:
        """decision_id, clip_id, kind (consensus / adjudicated), annotation_ids, created_at, undone."""
        return self._df("""SELECT r.*, (u.id IS NOT NULL) AS undone FROM annotation_resolutions r
                           LEFT JOIN decisions u ON u.action = 'undo' AND u.undoes = r.decision_id ORDER BY r.decision_id""")

    def record_resolution(self, clip_id: int, *, kind: str, annotation_ids: Sequence[int], annotator: str,
                          action: str, tag: str | None = None, rule: str | None = None, new_label: str | None = None,
                          set_excluded: bool | None = None, set_quarantined: bool | None = None,
                          note: str | None = None) -> int:
        """Settle a clip's open annotations with one ordinary decision, and link the two, in one
        transaction; refused when any of them is not an open annotation of this clip."""
        if kind not in ("consensus", "adjudicated"):
            raise ValueError(f"kind must be consensus or adjudicated, got {kind!r}")
        _check_decision(action, annotator)
        ids = [int(i) for i in annotation_ids]
        with self._mutex:
            rows = self.annotations(clip_id=clip_id)
            open_ids = set(rows.id[~rows.withdrawn & rows.settled_by.isna()].astype(int))
            if not ids or not set(ids) <= open_ids:
                raise StoreError(f"clip {clip_id}: annotations {sorted(set(ids) - open_ids) or ids} are not open; "
                                 "load the queue again")
            with self._transaction():
                decision_id = self._insert_decision(clip_id, annotator, action, tag, rule, new_label, set_excluded,
                                                    set_quarantined, note, None, None)
                self._exec("INSERT INTO annotation_resolutions VALUES (?, ?, ?, ?, ?)",
                           [decision_id, clip_id, kind, ids, _now()])
        return decision_id

    # --- quarantine ---------------------------------------------------------------------------
    def raise_quarantine(self, entries: pd.DataFrame, *, annotator: str) -> list[int]:
        """Queue clips for review: one quarantine row (clip_id, method, reason, and optionally
        score, rank, audit_run_id) and one 'quarantine' decision per clip, in one transaction.
        Returns the decision ids."""
        for column in ("clip_id", "method", "reason"):
            if column not in entries.columns:
                raise ValueError(f"quarantine entries need a {column} column")
        _check_decision("quarantine", annotator)
        frame = entries.reindex(columns=["clip_id", "audit_run_id", "method", "reason", "score", "rank"])
        frame = frame.astype({"score": "float64", "rank": "Int64", "audit_run_id": "string"})
        frame.insert(0, "row_order", range(len(frame)))
        with self._mutex:
            with self._transaction(incoming_quarantine=frame):
                unknown = self._fetch_one("SELECT count(*) FROM incoming_quarantine i ANTI JOIN clips c ON c.id = i.clip_id")[0]
                if unknown:
                    raise StoreError(f"{unknown} quarantine entries name clips that do not exist")
                first = self._fetch_one("SELECT coalesce(max(id), 0) FROM decisions")[0]
                now = _now()
                self._exec(
                    """INSERT INTO decisions SELECT nextval('event_seq'), clip_id, ?, 'quarantine', NULL, NULL, NULL,
                              NULL, true, reason, NULL, ?, NULL, NULL FROM (SELECT * FROM incoming_quarantine ORDER BY row_order)""",
                    [annotator, now])
                ids = [r[0] for r in self._exec("SELECT id FROM decisions WHERE id > ? ORDER BY id", [first]).fetchall()]
                self._exec(
                    """INSERT INTO quarantine SELECT nextval('quarantine_seq'), i.clip_id, i.audit_run_id, i.method, i.reason,
                              i.score, i.rank, d.id, ? FROM incoming_quarantine i
                       JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS row_order FROM decisions WHERE id > ?) d
                         ON d.row_order = i.row_order""", [now, first])
        return ids

    def quarantine_queue(self, *, include_resolved: bool = False) -> pd.DataFrame:
        """Clips that were ever quarantined: their latest quarantine entry (why, score, which
        audit), current state, and who decided them last. Open ones first by score."""
        return self._df(
            f"""WITH latest AS (
                    SELECT * FROM quarantine QUALIFY row_number() OVER (PARTITION BY clip_id ORDER BY id DESC) = 1
                ), state AS ({_LABELS_SQL.format(as_of=LATEST)}),
                last_decision AS (
                    SELECT clip_id, arg_max(annotator, id) AS last_annotator, arg_max(action, id) AS last_action,
                           max(id) AS last_id, count(*) FILTER (WHERE annotator <> 'audit' AND action <> 'quarantine') AS human_decisions
                    FROM decisions GROUP BY clip_id
                )
                SELECT q.id AS quarantine_id, q.clip_id, q.method, q.reason, q.score, q.rank, q.audit_run_id, q.created_at,
                       s.path, s.split, s.source_group, s.original_label, s.label, s.excluded, s.quarantined,
                       l.last_annotator, l.last_action, l.last_id, l.human_decisions
                FROM latest q JOIN state s ON s.clip_id = q.clip_id LEFT JOIN last_decision l ON l.clip_id = q.clip_id
                WHERE ? OR s.quarantined
                ORDER BY s.quarantined DESC, q.score DESC NULLS LAST, q.clip_id""", [include_resolved])

    # --- relabel rules --------------------------------------------------------------------
    def set_rule(self, rule: Rule) -> None:
        """Add `rule`, or replace the rule with its tag (checked as in set_rules)."""
        self.set_rules([rule])

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Add rules, or replace the rules with their tags, all or nothing: each must pass
        Rule.check, and no hotkey may end up the key of two rules (Review maps a key to one tag).

        A rule is read when a tag is applied, so a change applies to tags recorded from then on;
        decisions already in the log keep the label, exclusion and rule text they were made with.
        """
        for rule in rules:
            rule.check()
        tags = [rule.tag for rule in rules]
        repeated = sorted({tag for tag in tags if tags.count(tag) > 1})
        if repeated:
            raise ValueError(f"rule tag: {', '.join(repeated)} given more than once")
        with self._mutex, self._transaction():
            for rule in rules:
                self._exec("INSERT OR REPLACE INTO relabel_rules VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [rule.tag, rule.action, rule.target_label, rule.keep_quarantined, rule.description,
                            rule.hotkey, _now()])
            clash = self._fetch_one(
                """SELECT hotkey, list(tag ORDER BY tag) FROM relabel_rules WHERE hotkey IS NOT NULL
                   GROUP BY hotkey HAVING count(*) > 1 ORDER BY hotkey LIMIT 1""")
            if clash:
                hotkey, holders = clash
                new = [tag for tag in holders if tag in tags]
                old = [tag for tag in holders if tag not in tags]
                if old:
                    raise ValueError(f"rule {new[0]!r}: hotkey {hotkey} is already the key of rule {old[0]!r}")
                raise ValueError(f"hotkey used by more than one rule: {hotkey} ({', '.join(holders)})")

    def rules(self) -> list[Rule]:
        with self._mutex:
            rows = self._exec(
                "SELECT tag, action, target_label, keep_quarantined, description, hotkey FROM relabel_rules ORDER BY hotkey NULLS LAST, tag").fetchall()
        return [Rule(*row) for row in rows]

    def delete_rule(self, tag: str) -> None:
        with self._mutex:
            self._exec("DELETE FROM relabel_rules WHERE tag = ?", [tag])

    # --- clip sets -------------------------------------------------------------------------
    # A named set of clips evaluated beside the splits (B4's expanded test set): a clip may be in
    # the test split and in a set. Versions are appended, never changed: replacing a set adds a
    # version that names the one it replaces.
    def add_clip_set(self, name: str, clip_ids: Sequence[int], *, actor: str, settings: dict | None = None,
                     replace: bool = False) -> int:
        """Record a version of the clip set `name` and return its id. An existing name is refused
        (StoreError) unless replace=True, which appends a new version; earlier ones stay in
        clip_sets(history=True)."""
        check_clip_set_name(name)
        if not actor or not actor.strip():
            raise ValueError("actor must be a non-empty name")
        ids = [int(c) for c in clip_ids]
        if not ids:
            raise ValueError(f"clip set {name!r}: needs at least one clip")
        if len(set(ids)) != len(ids):
            raise ValueError(f"clip set {name!r}: a clip is listed twice")
        with self._mutex, self._transaction(incoming_members=pd.DataFrame({"clip_id": ids})):
            current = self._fetch_one("SELECT id FROM clip_sets WHERE name = ? ORDER BY id DESC LIMIT 1", [name])
            if current is not None and not replace:
                raise StoreError(f"clip set {name!r} exists (version {current[0]}); replace it explicitly to record a "
                                 "new version (the old one stays in the history), or choose another name")
            unknown = self._fetch_one("SELECT count(*) FROM incoming_members i ANTI JOIN clips c ON c.id = i.clip_id")[0]
            if unknown:
                raise StoreError(f"clip set {name!r}: {unknown} of its clips do not exist in this session")
            set_id = self._next_event()
            self._exec("INSERT INTO clip_sets VALUES (?, ?, ?, ?, ?, ?)",
                       [set_id, name, actor, _json(settings), current[0] if current else None, _now()])
            self._exec("INSERT INTO clip_set_members SELECT ?, clip_id FROM incoming_members", [set_id])
        return set_id

    def clip_sets(self, *, as_of: int | None = None, history: bool = False) -> pd.DataFrame:
        """The version of each clip set current as of a decision id (default: now), or with
        history=True every version: id, name, clips, actor, settings (JSON text), replaces,
        created_at; newest first."""
        bound = LATEST if as_of is None else int(as_of)
        return self._df("""SELECT s.*, (SELECT count(*) FROM clip_set_members m WHERE m.set_id = s.id) AS clips
                           FROM clip_sets s WHERE s.id <= ?
                           QUALIFY ? OR row_number() OVER (PARTITION BY s.name ORDER BY s.id DESC) = 1
                           ORDER BY s.id DESC""", [bound, history])

    def clip_set(self, name: str, *, as_of: int | None = None) -> dict[str, Any]:
        """The version of set `name` current as of a decision id (default: now): id, name, actor,
        settings (dict), replaces, created_at, clip_ids (sorted). StoreError for a name with no
        version by then."""
        sets = self.clip_sets(as_of=as_of)
        row = sets[sets.name == name]
        if row.empty:
            known = ", ".join(sorted(sets.name)) or "none yet"
            raise StoreError(f"no clip set named {name!r} in this session (clip sets: {known})")
        record = row.iloc[0].to_dict()
        record["settings"] = json.loads(record["settings"]) if isinstance(record["settings"], str) else None
        record.update(id=int(record["id"]), clips=int(record["clips"]),
                      replaces=None if pd.isna(record["replaces"]) else int(record["replaces"]))
        with self._mutex:
            rows = self._exec("SELECT clip_id FROM clip_set_members WHERE set_id = ? ORDER BY clip_id",
                              [record["id"]]).fetchall()
        record["clip_ids"] = [int(r[0]) for r in rows]
        return record

    # --- runs -------------------------------------------------------------------------------
    # Written by the session's writer only: it registers a run when it freezes the manifest
    # and ingests what the child job left in the run folder when the job ends. A run folder
    # inside the session is stored relative to it, so a moved or copied session finds its own
    # runs; run() and runs() give absolute paths (older sessions stored absolute ones).
    def create_run(self, run_id: str, *, kind: str, preset: str | None, config: dict | None,
                   parent_run_id: str | None, manifest_decision_id: int | None, run_dir: str | Path,
                   status: str = "queued") -> None:
        _check_status(status)
        with self._mutex:
            self._exec("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, NULL)",
                              [run_id, kind, status, preset, _json(config), parent_run_id, manifest_decision_id,
                               self._stored_run_dir(run_dir), _now()])

    def _stored_run_dir(self, run_dir: str | Path) -> str:
        try:
            return Path(run_dir).resolve().relative_to(self.session_dir).as_posix()
        except ValueError:
            return str(run_dir)

    def _run_dir(self, stored: str | None) -> str | None:
        return str(self.session_dir / stored) if isinstance(stored, str) else stored

    def set_run_status(self, run_id: str, status: str, *, error: str | None = None, summary: dict | None = None) -> None:
        _check_status(status)
        finished = _now() if status in ("succeeded", "failed", "cancelled") else None
        # A run that starts again (a resume) sheds the error and end time of its earlier attempt.
        restarting = status in ("queued", "running")
        with self._mutex:
            self._exec(
                """UPDATE runs SET status = ?,
                   error = CASE WHEN ? THEN ? ELSE coalesce(?, error) END,
                   summary = coalesce(?, summary),
                   finished_at = CASE WHEN ? THEN NULL ELSE coalesce(?, finished_at) END WHERE id = ?""",
                [status, restarting, error, error, _json(summary), restarting, finished, run_id])

    def runs(self, *, kind: str | None = None) -> pd.DataFrame:
        frame = self._df("SELECT * FROM runs WHERE (?::VARCHAR IS NULL OR kind = ?) ORDER BY created_at DESC, id DESC",
                         [kind, kind])
        frame["run_dir"] = frame["run_dir"].map(self._run_dir)
        return frame

    def run(self, run_id: str) -> dict[str, Any]:
        frame = self._df("SELECT * FROM runs WHERE id = ?", [run_id])
        if frame.empty:
            raise StoreError(f"no run with id {run_id!r}")
        row = frame.iloc[0].to_dict()
        row["run_dir"] = self._run_dir(row["run_dir"])
        for key in ("config", "summary"):
            row[key] = json.loads(row[key]) if isinstance(row[key], str) else None
        return row

    def ingest_run_results(self, run_id: str, *, history: pd.DataFrame | None = None,
                           metrics: pd.DataFrame | None = None, predictions: pd.DataFrame | None = None,
                           breakdowns: pd.DataFrame | None = None,
                           vad_measurements: pd.DataFrame | None = None) -> None:
        """Replace a run's curves (step, epoch, name, value), metrics (split, name, class_label,
        value), predictions (clip_id, split, label, predicted, confidence, probs), breakdowns
        (split, column_name, group_name, position, n, accuracy, f1_macro) and VAD measurements
        (clip_id, detector, fraction, frame_s, frame_scores) in one transaction, so ingesting
        twice leaves one copy."""
        tables = [("run_metrics", history, ["step", "epoch", "name", "value"]),
                  ("metrics", metrics, ["split", "name", "class_label", "value"]),
                  ("predictions", predictions, ["clip_id", "split", "label", "predicted", "confidence", "probs"]),
                  ("breakdowns", breakdowns, ["split", "column_name", "group_name", "position", "n", "accuracy", "f1_macro"]),
                  ("vad_measurements", vad_measurements, ["clip_id", "detector", "fraction", "frame_s", "frame_scores"])]
        present = [(table, frame, columns) for table, frame, columns in tables if frame is not None]
        for table, frame, columns in present:
            missing = sorted(set(columns) - set(frame.columns))
            if missing:
                raise ValueError(f"{table} rows are missing columns {missing}")
        incoming = {f"incoming_{table}": frame[columns] for table, frame, columns in present}
        with self._mutex, self._transaction(**incoming):
            for table, _, _ in present:  # table names are constants
                self._exec(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
                self._exec(f"INSERT INTO {table} SELECT ?, * FROM incoming_{table}", [run_id])

    def run_history(self, run_id: str) -> pd.DataFrame:
        return self._df("SELECT step, epoch, name, value FROM run_metrics WHERE run_id = ? ORDER BY step, name", [run_id])

    def run_metrics(self, run_id: str, *, split: str | None = None) -> pd.DataFrame:
        return self._df("""SELECT split, name, class_label, value FROM metrics WHERE run_id = ?
                           AND (?::VARCHAR IS NULL OR split = ?) ORDER BY split, class_label NULLS FIRST, name""",
                        [run_id, split, split])

    def run_breakdowns(self, run_id: str, *, split: str | None = None) -> pd.DataFrame:
        """Accuracy and F1-macro per metadata group, columns and groups in reading order."""
        return self._df("""SELECT split, column_name, group_name, n, accuracy, f1_macro FROM breakdowns
                           WHERE run_id = ? AND (?::VARCHAR IS NULL OR split = ?)
                           ORDER BY split, column_name, position""", [run_id, split, split])

    def vad_measurements(self, *, clip_id: int | None = None, detector: str | None = None) -> pd.DataFrame:
        """The latest measurement of each (clip, detector) over all hygiene runs: run_id, clip_id,
        detector, fraction (speech frames / frames, in [0, 1]), frame_s, frame_scores."""
        return self._df("""SELECT v.* FROM vad_measurements v JOIN runs r ON r.id = v.run_id
                           WHERE (?::BIGINT IS NULL OR v.clip_id = ?) AND (?::VARCHAR IS NULL OR v.detector = ?)
                           QUALIFY row_number() OVER (PARTITION BY v.clip_id, v.detector
                                                      ORDER BY r.created_at DESC, r.id DESC) = 1
                           ORDER BY v.clip_id, v.detector""", [clip_id, clip_id, detector, detector])

    def ingest_duplicate_pairs(self, run_id: str, pairs: pd.DataFrame) -> None:
        """Replace a near-duplicate run's pairs (clip_a, clip_b, similarity, match, split_a, split_b)
        in one transaction, so ingesting twice leaves one copy."""
        columns = ["clip_a", "clip_b", "similarity", "match", "split_a", "split_b"]
        missing = sorted(set(columns) - set(pairs.columns))
        if missing:
            raise ValueError(f"duplicate_pairs rows are missing columns {missing}")
        with self._mutex, self._transaction(incoming_pairs=pairs[columns]):
            self._exec("DELETE FROM duplicate_pairs WHERE run_id = ?", [run_id])
            self._exec("INSERT INTO duplicate_pairs SELECT ?, * FROM incoming_pairs", [run_id])

    def duplicate_pairs(self, *, run_id: str | None = None, clip_id: int | None = None) -> pd.DataFrame:
        """Near-duplicate pairs (run_id, clip_a, clip_b, similarity, match, split_a, split_b), of one
        run and/or involving one clip, most similar first."""
        return self._df("""SELECT * FROM duplicate_pairs WHERE (?::VARCHAR IS NULL OR run_id = ?)
                           AND (?::BIGINT IS NULL OR clip_a = ? OR clip_b = ?)
                           ORDER BY similarity DESC, clip_a, clip_b""", [run_id, run_id, clip_id, clip_id, clip_id])

    # --- promotions ---------------------------------------------------------------------------
    def record_promotion(self, run_id: str | None, *, action: str, actor: str, reason: str | None = None,
                         report: dict | None = None) -> int:
        """Point production at run_id ('promote', 'override', 'rollback'); the table keeps the history."""
        if action not in ("promote", "override", "rollback"):
            raise ValueError(f"action must be promote, override or rollback, got {action!r}")
        if action == "override" and not (reason and reason.strip()):
            raise ValueError("an override needs a reason")
        with self._mutex:
            if run_id is not None and self._fetch_one("SELECT 1 FROM runs WHERE id = ?", [run_id]) is None:
                raise StoreError(f"no run with id {run_id!r}")
            promotion_id = self._fetch_one("SELECT nextval('promotion_seq')")[0]
            self._exec("INSERT INTO promotions VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [promotion_id, run_id, action, actor, reason, _json(report), _now()])
        return int(promotion_id)

    def production_run(self) -> str | None:
        """The run production points at now, or None before the first promotion."""
        return self._scalar("SELECT run_id FROM promotions ORDER BY id DESC LIMIT 1")

    def promotions(self) -> pd.DataFrame:
        return self._df("SELECT * FROM promotions ORDER BY id DESC")

    def prediction(self, run_id: str, clip_id: int) -> dict[str, Any] | None:
        """One clip's prediction in a run (predicted, confidence, probs), or None."""
        frame = self._df("SELECT * FROM predictions WHERE run_id = ? AND clip_id = ?", [run_id, clip_id])
        return None if frame.empty else frame.iloc[0].to_dict()

    def predictions(self, run_id: str, *, split: str | None = None) -> pd.DataFrame:
        """A run's predictions, of one split or clip set (the version current when the run froze
        its labels: a clip keeps its own split in the rows) or of every clip (split None)."""
        if split is not None and split not in SPLIT_NAMES:
            as_of = self._scalar("SELECT manifest_decision_id FROM runs WHERE id = ?", [run_id])
            version = self._scalar("SELECT max(id) FROM clip_sets WHERE name = ? AND id <= ?",
                                   [split, LATEST if as_of is None else int(as_of)])
            if version is not None:
                return self._df("""SELECT p.* FROM predictions p SEMI JOIN clip_set_members m
                                   ON m.clip_id = p.clip_id AND m.set_id = ? WHERE p.run_id = ? ORDER BY p.clip_id""",
                                [version, run_id])
        return self._df("""SELECT * FROM predictions WHERE run_id = ? AND (?::VARCHAR IS NULL OR split = ?)
                           ORDER BY clip_id""", [run_id, split, split])


def _plain_params(params: Sequence[Any] | dict[str, Any]) -> list[Any] | dict[str, Any]:
    """numpy scalars (ids taken from DataFrames) as Python values: DuckDB 2 refuses them."""
    def plain(value: Any) -> Any:
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(params, dict):
        return {k: plain(v) for k, v in params.items()}
    return [plain(v) for v in params]


def _check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")


def _check_decision(action: str, annotator: str) -> None:
    if action not in DECISION_ACTIONS:
        raise ValueError(f"action must be one of {DECISION_ACTIONS}, got {action!r}")
    if not annotator or not annotator.strip():
        raise ValueError("annotator must be a non-empty name")


def session_exists(session_dir: str | Path) -> bool:
    """Whether a session database lives in session_dir (callers never name the file)."""
    return (Path(session_dir) / DB_FILENAME).is_file()


def _session_db(session_dir: Path) -> Path:
    """The session's database file; a session path taken by a file is refused by name."""
    if session_dir.exists() and not session_dir.is_dir():
        raise StoreError(f"{session_dir} is a file, not a session folder; choose a folder (new or existing) for the session")
    return session_dir / DB_FILENAME


def _no_session(session_dir: Path) -> StoreError:
    return StoreError(f"no session at {session_dir} (no {DB_FILENAME}); create one with 'earmark demo' or 'earmark import'")


def _make_session_dir(session_dir: Path) -> None:
    try:
        session_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way, no permission, a read-only disk
        raise StoreError(f"cannot create the session folder {session_dir}: {exc.strerror or exc}") from None


def _connect(db_path: Path, *, shown_as: Path | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection, its failures as StoreErrors; shown_as names the session's own file
    in messages when db_path is a snapshot's copy."""
    shown = shown_as or db_path
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.IOException as exc:
        raise _lock_error(shown.parent, str(exc)) from None
    except duckdb.Error as exc:
        raise StoreError(f"{shown} is not a readable Earmark session database: {exc}") from None


def _copy_unchanged(db_path: Path, folder: Path, *, attempts: int = 20) -> Path:
    """Copy the database file and its WAL into folder; returns the copy of the database.

    The writer may commit (append to the WAL) or checkpoint (rewrite the file, drop the WAL)
    while they are copied, so a copy counts only when neither file changed while it was taken.
    """
    sources = [db_path, db_path.with_name(db_path.name + ".wal")]
    for _ in range(attempts):
        before = [_file_stamp(path) for path in sources]
        for source in sources:
            try:
                shutil.copyfile(source, folder / source.name)
            except FileNotFoundError:  # no WAL (or it went away): the copy must have none either
                (folder / source.name).unlink(missing_ok=True)
        if [_file_stamp(path) for path in sources] == before:
            return folder / db_path.name
        time.sleep(0.05)
    raise StoreError(f"session {db_path.parent} kept changing while it was being copied; try again")


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns), or None when the file does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _acquire_lock(session_dir: Path):
    lock_path = session_dir / LOCK_FILENAME
    handle = open(lock_path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise SessionInUseError(
            f"session {session_dir} is open in another process (pid {pid}); close it there, or work on another session") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _lock_error(session_dir: Path, message: str) -> StoreError:
    match = re.search(r"PID (\d+)", message)
    if "lock" in message.lower():
        pid = match.group(1) if match else "unknown"
        return SessionInUseError(f"session {session_dir} is open in another process (pid {pid}); close it there, or work on another session")
    return StoreError(f"{session_dir / DB_FILENAME} is not a readable Earmark session database: {message}")


