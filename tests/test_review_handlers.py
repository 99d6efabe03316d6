"""The Review tab's handlers without a browser: the queue a filter returns, the feed of clip views,
and the page's key presses applied as earmark.js sends them (a JSON batch of numbered commands),
on a real session (DuckDB store, WAV files on disk). The run's predictions are ingested as the
writer ingests a finished child's, so nothing is trained; the browser tests keep the flows."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest

from conftest import copy_session, tone, write_wav
from core import review
from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Rule, Store
from workbench import review_handlers as handlers
from workbench.context import Workbench, safe
from workbench.review_feed import HOTKEYS, WINDOW

CLASSES = ["alert_sounds", "emergency_sirens", "road_traffic"]
# (given label, predicted, confidence, audit score or None when not quarantined), in clip id order.
CLIPS = [("emergency_sirens", "alert_sounds", 0.9, 0.3), ("emergency_sirens", "alert_sounds", 0.8, 0.9),
         ("alert_sounds", "emergency_sirens", 0.7, 0.5), ("road_traffic", "alert_sounds", 0.6, 0.7),
         ("alert_sounds", "road_traffic", 0.9, 0.1), ("emergency_sirens", "road_traffic", 0.7, 0.8),
         ("road_traffic", "emergency_sirens", 0.5, 0.6), ("alert_sounds", "alert_sounds", 0.95, None)]
BY_SCORE = [1, 5, 3, 6, 2, 0, 4]  # the quarantined clips (indices), highest audit score first
RUN = "20260101-000000-train-review"


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """Eight short tones, the sirens rules, one promoted run's predictions, and seven of the clips
    in the quarantine queue with reasons and audit scores. Tests copy it (wb)."""
    root = tmp_path_factory.mktemp("review-handlers")
    audio = root / "audio"
    paths = [write_wav(audio / label / f"{label}-{i}.wav", tone(300.0 + 120 * i, seconds=0.4)).relative_to(audio)
             for i, (label, *_) in enumerate(CLIPS)]
    with Store.open(root / "session") as store:
        dataset = store.add_dataset(name="tones", root=audio, layout="folder")
        store.add_clips(dataset, pd.DataFrame({"path": [p.as_posix() for p in paths], "status": "ok", "split": "test",
                                               "duration_s": 0.4, "sample_rate_hz": 16000,
                                               "original_label": [label for label, *_ in CLIPS]}))
        seed_rules(store, load_rules(rules_file("sirens")))
        ids = store.clips().id.tolist()
        run_dir = root / "session" / "runs" / RUN
        run_dir.mkdir(parents=True)
        pd.DataFrame({"label": CLASSES}).to_parquet(run_dir / "manifest.parquet")  # the run's class order
        store.create_run(RUN, kind="train", preset="demo-fast", config=None, parent_run_id=None,
                         manifest_decision_id=store.last_decision_id(), run_dir=run_dir)
        store.ingest_run_results(RUN, predictions=pd.DataFrame({
            "clip_id": ids, "split": "test", "label": [c[0] for c in CLIPS], "predicted": [c[1] for c in CLIPS],
            "confidence": [c[2] for c in CLIPS],
            "probs": [[conf if name == pred else (1 - conf) / 2 for name in CLASSES] for _, pred, conf, _ in CLIPS]}))
        store.set_run_status(RUN, "succeeded")
        store.record_promotion(RUN, action="promote", actor="test")
        flagged = [(ids[i], c) for i, c in enumerate(CLIPS) if c[3] is not None]
        store.raise_quarantine(pd.DataFrame({
            "clip_id": [clip for clip, _ in flagged], "method": "extreme_off", "audit_run_id": RUN,
            "reason": [f"given {c[0]}, model says {c[1]}" for _, c in flagged], "score": [c[3] for _, c in flagged]}),
            annotator="audit")
    return root / "session"


@pytest.fixture
def wb(session, tmp_path) -> Workbench:
    bench = Workbench.open(copy_session(session, tmp_path / "session"))
    yield bench
    bench.store.close()


def clip_ids(wb: Workbench) -> list[int]:
    return wb.store.clips().id.tolist()


def load(wb: Workbench, *, label: str = "", reason: str = "", status: str = "open") -> tuple[list[int], dict, int]:
    """The default quarantine queue as the page loads it: (clip ids, the feed, loaded at)."""
    ids, _, window, pos, loaded = handlers.load_queue(wb, "quarantine", status, label, reason, "", RUN, "full", 0)
    assert pos == 0
    return ids, json.loads(window), loaded


def seen(window: dict, clip_id: int) -> int:
    """The decision id the page shows for a clip (what a key press sends as 'seen')."""
    return next(slot["seen"] for slot in window["slots"] if slot["clip"] == clip_id)


def send(wb: Workbench, name: str, commands: list[dict], ids: list[int], pos: int, *, applied: int = 0,
         loaded: int = 0, have: list[str] = ()) -> tuple[dict, object, list[int], int, int]:
    """One batch as earmark.js sends it; returns (feed, table, ids, position, applied)."""
    payload = json.dumps({"commands": commands, "have": list(have)})
    window, table, ids, pos, applied = handlers.run_commands(wb, None, name, payload, ids, pos, applied, RUN, "full",
                                                              "quarantine", loaded)
    return json.loads(window), table, ids, pos, applied


def tag(seq: int, clip_id: int, window: dict, name: str, **extra) -> dict:
    return {"seq": seq, "kind": "decide", "clip": clip_id, "seen": seen(window, clip_id), "action": "tag",
            "tag": name, **extra}


# --- loading a queue ----------------------------------------------------------------------------
def test_the_default_queue_is_open_quarantine_by_score_and_the_feed_holds_the_next_clips(wb):
    ids, window, loaded = load(wb)
    assert ids == [clip_ids(wb)[i] for i in BY_SCORE]
    assert loaded == wb.store.last_decision_id()
    assert [slot["clip"] for slot in window["slots"]] == ids[:WINDOW] and window["end"] is None
    first = window["slots"][0]["html"]
    assert "<b>clip 1 of 7</b> in this queue" in first and "flagged: given emergency_sirens, model says alert_sounds" in first
    assert "predicted <b>alert_sounds</b> (0.80)" in first and f'data-clip="{ids[0]}"' in first
    assert "0 of 7 in this queue decided since it was loaded &middot; 7 of 7 quarantined clips open" in window["counter"]
    table = handlers.load_queue(wb, "quarantine", "open", "", "", "", RUN, "full", 0)[1]
    assert "score" not in table.columns and table.clip_id.tolist() == ids


def test_filters_narrow_the_queue_by_class_and_reason(wb):
    ids = clip_ids(wb)
    assert load(wb, label="road_traffic")[0] == [ids[3], ids[6]]  # given road_traffic, in score order
    assert load(wb, reason="MODEL SAYS road_traffic")[0] == [ids[5], ids[4]]  # case-insensitive
    assert load(wb, status="resolved")[0] == []
    empty = load(wb, reason="no such reason")[1]
    assert empty["slots"] == [] and "Nothing in this queue" in empty["end"]


def test_the_page_opens_on_production_and_the_run_list_marks_it(wb):
    run, ids, *_ = handlers.open_page(wb, "quarantine", "open", "", "", "", "full", 0)
    assert run.value == RUN and run.choices == [(f"{RUN} (train, production)", RUN)]
    assert ids == [clip_ids(wb)[i] for i in BY_SCORE]


# --- key presses ----------------------------------------------------------------------------------
def test_a_tag_is_logged_with_its_rule_and_the_next_clip_is_shown(wb):
    ids, window, loaded = load(wb)
    shown, table, ids_after, pos, applied = send(wb, "ana", [tag(1, ids[0], window, "non_siren_alert")], ids, 0,
                                                 loaded=loaded)
    assert shown["results"] == [{"seq": 1, "ok": True, "text": f"clip {ids[0]}: tagged non_siren_alert -> label "
                                                                  "alert_sounds, released"}]
    assert (ids_after, pos, applied) == (ids, 1, 1) and shown["slots"][0]["clip"] == ids[1]
    decision = wb.store.decisions(annotator="ana").iloc[0]
    assert (decision.clip_id, decision.action, decision.tag) == (ids[0], "tag", "non_siren_alert")
    assert decision.rule == "non_siren_alert -> relabel alert_sounds, release"
    assert wb.store.clip_state(ids[0])["label"] == "alert_sounds"
    assert "1 of 7 in this queue decided since it was loaded &middot; 6 of 7" in shown["counter"]
    assert table.set_index("clip_id").loc[ids[0], ["label", "status"]].tolist() == ["alert_sounds", "resolved"]


def test_a_resent_batch_is_applied_once_and_held_views_are_not_sent_again(wb):
    ids, window, _ = load(wb)
    batch = [tag(1, ids[0], window, "true_siren"), {"seq": 2, "kind": "goto", "clip": ids[2]}]
    held = [slot["key"] for slot in send(wb, "ana", batch, ids, 0)[0]["slots"]]
    again, table, _, pos, applied = send(wb, "ana", batch, ids, 2, applied=2, have=held)
    assert again["results"] == [] and table == gr.skip() and (pos, applied) == (2, 2)
    assert len(wb.store.decisions(annotator="ana")) == 1
    assert [slot["html"] for slot in again["slots"]] == [None] * len(again["slots"])  # the browser holds them all


def test_undo_goes_back_to_the_clip_and_puts_it_back_in_the_queue(wb):
    ids, window, _ = load(wb)
    _, _, _, pos, applied = send(wb, "ana", [tag(1, ids[0], window, "ambient")], ids, 0)
    shown, _, ids_after, pos, _ = send(wb, "ana", [{"seq": 2, "kind": "undo"}], ids, pos, applied=applied)
    tagged = int(wb.store.decisions(annotator="ana", limit=2).id.iloc[1])
    assert shown["results"][0]["text"] == f"undid decision {tagged} (tag ambient) on clip {ids[0]}"
    assert shown["reset"] is True and pos == 0 and ids_after == ids
    log = wb.store.decisions(annotator="ana")
    assert log.action.tolist() == ["undo", "tag"] and log.undone.tolist() == [False, True]
    assert wb.store.clip_state(ids[0])["quarantined"] and wb.store.clip_state(ids[0])["label"] == "emergency_sirens"
    nothing = send(wb, "bo", [{"seq": 1, "kind": "undo"}], ids, 0)[0]["results"]
    assert nothing == [{"seq": 1, "ok": False, "text": "bo has no decision left to undo.", "clip": None}]


def test_a_conflict_is_refused_in_one_line_and_puts_the_clip_back(wb):
    ids, window, _ = load(wb)
    review.apply_tag(wb.store, ids[0], tag="collision_artifact", annotator="bo")  # after ana's page loaded
    batch = [tag(1, ids[0], window, "true_siren"), tag(2, ids[1], window, "true_siren")]
    shown, _, _, pos, applied = send(wb, "ana", batch, ids, 0)
    refused, skipped = shown["results"]
    assert refused["ok"] is False and refused["clip"] == ids[0] and "\n" not in refused["text"]
    assert refused["text"].startswith(f"clip {ids[0]} was already decided by bo (tag collision_artifact) at ")
    assert skipped == {"seq": 2, "ok": False, "text": "not recorded: an earlier key press failed"}
    assert (pos, applied) == (0, 2) and shown["reset"] is True
    assert shown["slots"][0]["clip"] == ids[0] and "bo" in shown["slots"][0]["html"]  # as it stands now
    assert wb.store.decisions(annotator="ana").empty


def test_the_same_key_twice_records_nothing_new(wb):
    ids, window, _ = load(wb)
    _, _, _, pos, applied = send(wb, "ana", [tag(1, ids[0], window, "ambiguous_drone")], ids, 0)
    back, _, _, pos, applied = send(wb, "ana", [{"seq": 2, "kind": "goto", "clip": ids[0]}], ids, pos, applied=applied)
    assert pos == 0 and back["slots"][0]["clip"] == ids[0]
    shown = send(wb, "ana", [tag(3, ids[0], back, "ambiguous_drone")], ids, pos, applied=applied)[0]
    assert shown["results"][0]["text"] == f"clip {ids[0]}: already tagged ambiguous_drone by ana; nothing new recorded"
    assert len(wb.store.decisions(annotator="ana")) == 1


def test_a_decision_needs_a_signer_and_a_relabel_needs_a_class(wb):
    ids, window, _ = load(wb)
    unsigned = send(wb, " ", [tag(1, ids[0], window, "true_siren")], ids, 0)[0]["results"][0]
    assert unsigned["ok"] is False and unsigned["text"].startswith("Enter your name (top right)")
    relabel = {"seq": 1, "kind": "decide", "clip": ids[0], "seen": seen(window, ids[0]), "action": "relabel"}
    unlabelled = send(wb, "ana", [relabel], ids, 0)[0]["results"][0]
    assert unlabelled["text"] == "Choose a class in 'relabel to' first."
    assert wb.store.decisions(annotator="ana").empty and wb.store.decisions(annotator=" ").empty


def test_after_the_last_clip_the_queue_says_how_many_were_reviewed(wb):
    ids, window, loaded = load(wb, label="road_traffic")
    batch = [tag(1, ids[0], window, "ambient"), tag(2, ids[1], window, "ambient")]
    shown, _, _, pos, _ = send(wb, "ana", batch, ids, 0, loaded=loaded)
    assert pos == 2 and shown["slots"] == []
    assert shown["end"].startswith("<h3>2 of 2 reviewed</h3>") and "Train tab" in shown["end"]


# --- rows, runs and rules ---------------------------------------------------------------------------
def test_picking_a_row_opens_its_clip_or_says_it_left_the_queue(wb):
    ids, _, loaded = load(wb)
    window, pos = handlers.pick_row(wb, ids, RUN, "0-4 kHz", "quarantine", loaded, 0, ids[3])
    assert pos == 3 and json.loads(window)["slots"][0]["clip"] == ids[3]
    gone = clip_ids(wb)[7]  # never quarantined
    with pytest.raises(ValueError, match=f"clip {gone} is not in this queue any more: load the queue again"):
        handlers.pick_row(wb, ids, RUN, "full", "quarantine", loaded, 0, gone)
    with pytest.warns(UserWarning, match="not in this queue"):  # the toast, outside a request
        assert safe(handlers.pick_row)(wb, ids, RUN, "full", "quarantine", loaded, 0, gone) == gr.skip()


def test_the_legend_and_tag_buttons_follow_the_rules(wb):
    legend, *buttons = handlers.rule_views(wb)
    assert "<kbd>1</kbd>-<kbd>6</kbd> tag" in legend and "No key" not in legend
    assert [b.visible for b in buttons] == [key in "123456" for key in HOTKEYS]
    assert buttons[HOTKEYS.index("2")].value == "2  non_siren_alert"
    wb.store.set_rule(Rule(tag="horn_like", action="relabel", target_label="alert_sounds", keep_quarantined=False,
                         hotkey="8"))
    wb.store.set_rule(Rule(tag="unsure", action="keep", target_label=None, keep_quarantined=True))
    legend, *buttons = handlers.rule_views(wb)
    assert "<kbd>6</kbd> <kbd>8</kbd> tag" in legend and "No key (give one in the Data tab to tag here): unsure" in legend
    assert '&quot;8&quot;: &quot;horn_like&quot;' in legend  # the key map earmark.js applies
    assert buttons[HOTKEYS.index("8")].visible is True and buttons[HOTKEYS.index("8")].value == "8  horn_like"
