"""The session store against a real DuckDB file: log semantics, as-of rebuilds, locking, durability."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from conftest import held_by_another_process
from core.store import (MIGRATIONS, REFRESH_LABELS_VIEW, SCHEMA_VERSION, Rule, SchemaVersionError, SessionInUseError,
                        Store, StoreError)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "session") as s:
        yield s


def migrations_up_to(version: int) -> list[tuple[int, list[str]]]:
    """An older Earmark's migrations. Its labels view used its own query, which this code no
    longer has, so the simulated old session goes without the view (the upgrade builds it)."""
    return [(v, [s for s in statements if s != REFRESH_LABELS_VIEW]) for v, statements in MIGRATIONS if v <= version]


def add_three_clips(store: Store) -> list[int]:
    dataset_id = store.add_dataset(name="d", root=store.session_dir, layout="folder")
    store.add_clips(dataset_id, pd.DataFrame({
        "path": ["a.wav", "b.wav", "c.wav"], "status": "ok", "split": ["train", "val", "test"],
        "original_label": ["emergency_sirens", "alert_sounds", "road_traffic"]}))
    return store.clips().id.tolist()


def test_new_session_has_every_table_at_the_latest_schema(store):
    assert store.schema_version == SCHEMA_VERSION
    tables = set(store._df("SELECT table_name FROM information_schema.tables").table_name)
    assert {"datasets", "clips", "decisions", "relabel_rules", "quarantine", "runs", "run_metrics",
            "predictions", "metrics", "breakdowns", "vad_measurements", "promotions", "current_labels", "schema_version"} <= tables


def test_reimport_adds_nothing_twice(store):
    add_three_clips(store)
    dataset_id = store.add_dataset(name="d", root=store.session_dir, layout="folder")
    added = store.add_clips(dataset_id, pd.DataFrame({"path": ["a.wav", "d.wav"], "status": "ok"}))
    assert added == 1
    assert sorted(store.clips().path) == ["a.wav", "b.wav", "c.wav", "d.wav"]


def test_same_dataset_name_from_another_root_is_refused(store, tmp_path):
    store.add_dataset(name="d", root=tmp_path / "one", layout="folder")
    with pytest.raises(StoreError, match="already imported from"):
        store.add_dataset(name="d", root=tmp_path / "two", layout="folder")


def test_current_label_is_derived_from_the_log_and_undo_appends(store):
    a, b, _ = add_three_clips(store)
    relabel = store.record_decision(a, annotator="ann", action="tag", tag="non_siren_alert",
                                    rule="non_siren_alert -> relabel alert_sounds", new_label="alert_sounds",
                                    set_quarantined=False)
    exclude = store.record_decision(b, annotator="bob", action="exclude", set_excluded=True)
    state = store.labels().set_index("clip_id")
    assert state.loc[a, "label"] == "alert_sounds"
    assert state.loc[a, "original_label"] == "emergency_sirens"  # never updated in place
    assert bool(state.loc[b, "excluded"])

    undo_id = store.undo(relabel, annotator="ann")
    assert undo_id > exclude > relabel  # ids only grow
    state = store.labels().set_index("clip_id")
    assert state.loc[a, "label"] == "emergency_sirens"
    log = store.decisions(clip_id=a)
    assert list(log.action) == ["undo", "tag"]
    assert bool(log.set_index("id").loc[relabel, "undone"])
    with pytest.raises(StoreError, match="already undone"):
        store.undo(relabel, annotator="ann")
    with pytest.raises(StoreError, match="itself an undo"):
        store.undo(undo_id, annotator="ann")


def test_undo_restores_the_previous_effective_label_not_the_original(store):
    a, _, _ = add_three_clips(store)
    store.record_decision(a, annotator="ann", action="relabel", new_label="alert_sounds")
    second = store.record_decision(a, annotator="ann", action="relabel", new_label="collision_sounds")
    store.undo(second, annotator="ann")
    assert store.clip_state(a)["label"] == "alert_sounds"


def test_labels_as_of_any_decision_rebuild_the_state_and_clip_set_exactly(store):
    a, b, c = add_three_clips(store)
    d1 = store.record_decision(a, annotator="ann", action="relabel", new_label="alert_sounds")
    frozen_at = store.last_decision_id()
    frozen = store.labels(as_of=frozen_at)
    store.record_decision(b, annotator="ann", action="relabel", new_label="emergency_sirens")
    store.undo(d1, annotator="ann")
    dataset_id = store.add_dataset(name="d", root=store.session_dir, layout="folder")
    store.add_clips(dataset_id, pd.DataFrame({"path": ["late.wav"], "status": "ok", "original_label": "road_traffic"}))

    rebuilt = store.labels(as_of=frozen_at)
    pd.testing.assert_frame_equal(rebuilt, frozen)
    assert len(store.labels()) == 4 and len(rebuilt) == 3
    assert store.labels().set_index("clip_id").loc[a, "label"] == "emergency_sirens"
    assert rebuilt.set_index("clip_id").loc[a, "label"] == "alert_sounds"


def test_bulk_decisions_get_increasing_ids_in_row_order(store):
    a, b, c = add_three_clips(store)
    ids = store.record_decisions(pd.DataFrame({
        "clip_id": [c, a, b], "annotator": "audit", "action": "quarantine", "set_quarantined": True}))
    assert ids == sorted(ids) and len(set(ids)) == 3
    log = store.decisions().set_index("id")
    assert [log.loc[i, "clip_id"] for i in ids] == [c, a, b]
    assert store.labels().quarantined.all()


def test_bad_decisions_are_refused_with_a_clear_message(store):
    a, _, _ = add_three_clips(store)
    with pytest.raises(ValueError, match="action must be one of"):
        store.record_decision(a, annotator="ann", action="delete")
    with pytest.raises(ValueError, match="annotator"):
        store.record_decision(a, annotator="  ", action="relabel", new_label="x")
    with pytest.raises(StoreError, match="no clip with id 999"):
        store.record_decision(999, annotator="ann", action="relabel", new_label="x")
    with pytest.raises(StoreError, match="do not exist"):
        store.record_decisions(pd.DataFrame({"clip_id": [a, 999], "annotator": "x", "action": "tag"}))
    assert store.decisions().empty  # the failed batch left nothing behind
    # The transaction dropped its registered rows: the next batch writes, and only its own rows.
    ids = store.record_decisions(pd.DataFrame({"clip_id": [a], "annotator": "x", "action": "keep"}))
    assert store.decisions().id.tolist() == ids and len(ids) == 1


def test_rules_are_editable(store):
    store.set_rule(Rule("true_siren", "relabel", "emergency_sirens", False, "a real siren", "1"))
    store.set_rule(Rule("true_siren", "relabel", "emergency_sirens", False, "edited", "1"))
    store.set_rule(Rule("ambiguous_drone", "exclude", None, True, "tonal drone", "6"))
    rules = {r.tag: r for r in store.rules()}
    assert rules["true_siren"].description == "edited"
    assert rules["ambiguous_drone"].describe() == "ambiguous_drone -> exclude, keep quarantined"
    with pytest.raises(ValueError, match="target_label"):
        store.set_rule(Rule("bad", "relabel", None, False))


def test_a_rule_whose_hotkey_another_rule_holds_is_refused_and_nothing_is_written(store):
    store.set_rules([Rule("true_siren", "relabel", "emergency_sirens", False, "a real siren", "1"),
                     Rule("ambient", "relabel", "environmental_sounds", False, "", "3")])
    before = store.rules()
    with pytest.raises(ValueError, match=r"^rule 'horn': hotkey 1 is already the key of rule 'true_siren'$"):
        store.set_rule(Rule("horn", "relabel", "car_horn", False, "", "1"))
    # Moving ambient onto key 1 is refused too: the replaced row comes back, unchanged.
    with pytest.raises(ValueError, match="hotkey 1 is already the key of rule 'true_siren'"):
        store.set_rule(Rule("ambient", "relabel", "road_traffic", True, "moved", "1"))
    # A batch is all or nothing: its good first rule is not kept when the second clashes.
    with pytest.raises(ValueError, match="hotkey used by more than one rule: 7 \\(a, b\\)"):
        store.set_rules([Rule("a", "keep", None, False, "", "7"), Rule("b", "keep", None, False, "", "7")])
    with pytest.raises(ValueError, match="rule tag: a given more than once"):
        store.set_rules([Rule("a", "keep", None, False), Rule("a", "exclude", None, False)])
    assert store.rules() == before
    store.set_rule(Rule("ambient", "relabel", "road_traffic", True, "moved", "4"))  # a free key is taken
    assert {r.tag: r.hotkey for r in store.rules()} == {"true_siren": "1", "ambient": "4"}


def test_second_process_gets_a_clear_in_use_message(tmp_path):
    session = tmp_path / "session"
    with Store.open(session):
        code = f"from core.store import Store; Store.open({str(session)!r})"
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"is open in another process (pid {os.getpid()})" in result.stderr
    # released on close: opening again works
    with Store.open(session) as again:
        assert again.schema_version == SCHEMA_VERSION


def test_opening_a_newer_session_fails_clearly(tmp_path):
    session = tmp_path / "session"
    Store.open(session).close()
    con = duckdb.connect(str(session / "workbench.duckdb"))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade Earmark"):
        Store.open(session)


def test_opening_an_older_session_upgrades_it(tmp_path, monkeypatch):
    session = tmp_path / "session"
    Store.open(session).close()
    extra = (SCHEMA_VERSION + 1, ["CREATE TABLE probe_upgrade (x INTEGER)"])
    monkeypatch.setattr("core.store.MIGRATIONS", MIGRATIONS + [extra])
    monkeypatch.setattr("core.store.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store.open(session) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION + 1
        assert upgraded._scalar("SELECT count(*) FROM probe_upgrade") == 0


def test_a_version_2_session_gains_breakdowns_and_keeps_one_copy_per_ingest(tmp_path, monkeypatch):
    session = tmp_path / "session"
    with monkeypatch.context() as before_breakdowns:
        before_breakdowns.setattr("core.store.MIGRATIONS", migrations_up_to(2))
        before_breakdowns.setattr("core.store.SCHEMA_VERSION", 2)
        Store.open(session).close()
    rows = pd.DataFrame({"split": "test", "column_name": "snr_db", "group_name": ["0-5 dB", "(none)", "5-10 dB"],
                         "position": [0, 2, 1], "n": [6, 29, 16], "accuracy": [0.5, 1.0, 0.75], "f1_macro": [0.4, 1.0, None]})
    with Store.open(session) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.create_run("r1", kind="train", preset=None, config={}, parent_run_id=None, manifest_decision_id=0,
                         run_dir=tmp_path)
        store.ingest_run_results("r1", breakdowns=rows)
        store.ingest_run_results("r1", breakdowns=rows)  # ingesting again replaces
        stored = store.run_breakdowns("r1")
    assert list(stored.group_name) == ["0-5 dB", "5-10 dB", "(none)"]  # in reading order
    assert list(stored.n) == [6, 16, 29] and pd.isna(stored.f1_macro.iloc[1])


def test_a_version_3_session_gains_vad_measurements_and_reads_the_latest_per_clip_and_detector(tmp_path, monkeypatch):
    session = tmp_path / "session"
    with monkeypatch.context() as before_vad:
        before_vad.setattr("core.store.MIGRATIONS", migrations_up_to(3))
        before_vad.setattr("core.store.SCHEMA_VERSION", 3)
        with Store.open(session) as old:
            add_three_clips(old)
    with Store.open(session) as store:
        assert store.schema_version == SCHEMA_VERSION
        a, b, _ = store.clips().id.tolist()
        for run_id in ("h1", "h2"):
            store.create_run(run_id, kind="hygiene", preset=None, config={}, parent_run_id=None,
                             manifest_decision_id=0, run_dir=tmp_path / run_id)
        first = pd.DataFrame({"clip_id": [a, a, b], "detector": ["webrtc", "silero", "webrtc"],
                              "fraction": [0.2, 0.25, 0.9], "frame_s": [0.03, 0.032, 0.03],
                              "frame_scores": [[0, 1, 0, 0, 0], [0.1, 0.6, 0.2, 0.1], [1, 1, 1, 0, 1]]})
        store.ingest_run_results("h1", vad_measurements=first)
        store.ingest_run_results("h1", vad_measurements=first)  # ingesting again replaces
        store.ingest_run_results("h2", vad_measurements=first.iloc[:1].assign(fraction=0.8, frame_scores=[[1, 1, 1, 1, 0]]))
        latest = store.vad_measurements()
        assert list(zip(latest.clip_id, latest.detector, latest.run_id, latest.fraction)) == [
            (a, "silero", "h1", 0.25), (a, "webrtc", "h2", 0.8), (b, "webrtc", "h1", 0.9)]
        one = store.vad_measurements(clip_id=a, detector="silero")
        assert len(one) == 1 and list(one.frame_scores.iloc[0]) == pytest.approx([0.1, 0.6, 0.2, 0.1])
        assert store._scalar("SELECT count(*) FROM vad_measurements WHERE run_id = 'h1'") == 3


def test_a_version_4_session_keeps_its_decisions_and_gains_moves_between_splits(tmp_path, monkeypatch):
    session = tmp_path / "session"
    with monkeypatch.context() as before_moves:
        before_moves.setattr("core.store.MIGRATIONS", migrations_up_to(4))
        before_moves.setattr("core.store.SCHEMA_VERSION", 4)
        with Store.open(session) as old:
            a, b, c = add_three_clips(old)
            old._exec("INSERT INTO decisions VALUES (nextval('event_seq'), ?, 'ann', 'relabel', NULL, NULL, "
                      "'alert_sounds', NULL, NULL, NULL, NULL, now())", [c])  # as version 4 wrote it
    with Store.open(session) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.clip_state(c)["label"] == "alert_sounds"
        moved = store.record_decision(c, annotator="ann", action="move", set_split="train", set_group="street-9")
        view = store._df("SELECT clip_id, split, source_group FROM current_labels ORDER BY clip_id")
        assert view.split.tolist() == ["train", "val", "train"] and view.source_group.iloc[2] == "street-9"
    with Store.open(session) as reopened:
        reopened.undo(moved, annotator="ann")
        assert reopened.clip_state(c)["split"] == "test" and pd.isna(reopened.clip_state(c)["source_group"])
        assert reopened.labels(as_of=moved).split.tolist() == ["train", "val", "train"]


def test_a_move_decision_carries_a_clip_and_its_augmented_copies_to_another_split(store):
    a, b, c = add_three_clips(store)
    store.add_clips(1, pd.DataFrame({"path": ["c_copy.wav"], "status": "ok", "split": "test", "parent_clip_id": [c]}))
    store.record_decisions(pd.DataFrame({"clip_id": [c], "annotator": "ann", "action": "move", "set_split": "val",
                                         "set_group": "g"}))
    states = store.labels().set_index("clip_id")
    copy = states.index.max()
    assert states.loc[c, "split"] == "val" and states.loc[copy, "split"] == "val" and states.loc[copy, "source_group"] == "g"
    assert states.loc[a, "split"] == "train" and states.loc[b, "split"] == "val"


def test_a_copied_session_finds_its_own_run_folders(tmp_path):
    """Run folders inside the session are kept relative to it: a copy (or a moved session) reads
    its own runs, never the original's; a run folder elsewhere keeps its absolute path."""
    elsewhere = tmp_path / "elsewhere" / "r2"
    with Store.open(tmp_path / "session") as store:
        store.create_run("r1", kind="train", preset=None, config={}, parent_run_id=None, manifest_decision_id=0,
                         run_dir=store.session_dir / "runs" / "r1")
        store.create_run("r2", kind="train", preset=None, config={}, parent_run_id=None, manifest_decision_id=0,
                         run_dir=elsewhere)
        assert store.run("r1")["run_dir"] == str(store.session_dir / "runs" / "r1")
    shutil.copytree(tmp_path / "session", tmp_path / "copy")
    with Store.open(tmp_path / "copy") as copy:
        assert copy.run("r1")["run_dir"] == str((tmp_path / "copy" / "runs" / "r1").resolve())
        assert copy.runs().set_index("id").run_dir.to_dict() == {"r1": copy.run("r1")["run_dir"], "r2": str(elsewhere)}
        assert copy.run("r2")["run_dir"] == str(elsewhere)


def test_a_non_database_file_is_reported_not_traced(tmp_path):
    session = tmp_path / "session"
    session.mkdir()
    (session / "workbench.duckdb").write_text("this is not a database")
    with pytest.raises(StoreError, match="not a readable Earmark session database"):
        Store.open(session)


def test_missing_session_without_create_is_explained(tmp_path):
    with pytest.raises(StoreError, match="no session at"):
        Store.open(tmp_path / "nowhere", create=False)


def test_acknowledged_writes_survive_sigkill(tmp_path):
    """A writer acknowledges decisions as fast as it can and is killed with SIGKILL mid-stream;
    every decision it acknowledged is in the file on reopen."""
    session = tmp_path / "session"
    with Store.open(session) as s:
        clip_id = add_three_clips(s)[0]
    ack_file = tmp_path / "acks.txt"
    writer = textwrap.dedent(f"""
        from core.store import Store
        store = Store.open({str(session)!r})
        with open({str(ack_file)!r}, "a") as acks:
            i = 0
            while True:
                decision = store.record_decision({clip_id}, annotator="ann", action="relabel", new_label=f"label_{{i}}")
                acks.write(f"{{decision}} label_{{i}}\\n"); acks.flush()
                i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not ack_file.exists() or len(ack_file.read_text().splitlines()) < 150):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    acknowledged = [line.split() for line in ack_file.read_text().splitlines() if line.strip()]
    assert len(acknowledged) >= 150
    with Store.open(session) as s:
        stored = set(s.decisions().id)
        assert {int(decision) for decision, _ in acknowledged} <= stored
        # the clip's label is the last acknowledged one, or one written after it that was not yet acked
        last_label = acknowledged[-1][1]
        current = s.clip_state(clip_id)["label"]
        assert int(current.split("_")[1]) >= int(last_label.split("_")[1])


def test_a_session_path_taken_by_a_file_is_refused_by_name(tmp_path):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a session")
    with pytest.raises(StoreError, match=f"{taken} is a file, not a session folder"):
        Store.open(taken)
    with pytest.raises(StoreError, match=f"cannot create the session folder {taken / 'inner'}"):
        Store.open(taken / "inner")
    assert taken.read_text() == "not a session"


@pytest.fixture
def held_session(tmp_path):
    """A session with three clips, held by a second process that has committed one decision."""
    session = tmp_path / "session"
    with Store.open(session) as s:
        add_three_clips(s)
    with held_by_another_process(session) as pid:
        yield session, pid


def session_files(session: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(session.iterdir())}


def test_a_snapshot_reads_a_session_another_process_holds_and_writes_none_of_it(held_session):
    session, holder_pid = held_session
    with pytest.raises(SessionInUseError, match=f"pid {holder_pid}"):
        Store.open(session)
    before = session_files(session)
    with Store.open_snapshot(session) as snapshot:
        assert snapshot.session_dir == session.resolve()
        assert snapshot.decisions().annotator.tolist() == ["holder"]  # the holder's committed write is there
        assert "changed_by_holder" in set(snapshot.labels().label)
        with pytest.raises(duckdb.Error, match="read-only"):
            snapshot.record_decision(1, annotator="ana", action="note", note="nowhere to go")
        copy = snapshot._snapshot_dir
    assert not copy.exists()  # the copy is gone on close
    assert session_files(session) == before  # the session was not touched, its lock not taken


def test_a_snapshot_of_a_missing_session_is_explained(tmp_path):
    with pytest.raises(StoreError, match="no session at"):
        Store.open_snapshot(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_a_run_that_starts_again_sheds_its_earlier_error_and_end_time(tmp_path):
    with Store.open(tmp_path / "s") as store:
        run_id = "r1"
        store.create_run(run_id, kind="train", preset="p", config={}, parent_run_id=None, manifest_decision_id=None,
                         run_dir=tmp_path / "s" / "runs" / run_id)
        store.set_run_status(run_id, "failed", error="killed")
        assert store.run(run_id)["error"] == "killed" and store.run(run_id)["finished_at"] is not None
        store.set_run_status(run_id, "running")
        assert store.run(run_id)["error"] is None and pd.isna(store.run(run_id)["finished_at"])
        store.set_run_status(run_id, "succeeded")
        assert store.run(run_id)["error"] is None
