"""Blind double annotation through the Review tab's handlers and the CLI, on a real session
(DuckDB store, WAV files): blindness, consensus, the adjudication queue, the login as signer."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

import app
from conftest import copy_session, tone, write_wav
from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Store, StoreError
from pipelines import double_annotation as double
from workbench import review_handlers as handlers
from workbench.agreement_panel import report_views
from workbench.context import Workbench

LABELS = ["emergency_sirens", "alert_sounds", "emergency_sirens", "alert_sounds", "road_traffic"]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """Five short tones, the sirens rules, all five in the quarantine queue, set to two
    annotators per clip. Tests copy it (wb)."""
    root = tmp_path_factory.mktemp("double")
    audio = root / "audio"
    paths = [write_wav(audio / label / f"{label}-{i}.wav", tone(300.0 + 150 * i, seconds=0.4)).relative_to(audio)
             for i, label in enumerate(LABELS)]
    with Store.open(root / "session") as store:
        dataset = store.add_dataset(name="tones", root=audio, layout="folder")
        store.add_clips(dataset, pd.DataFrame({"path": [p.as_posix() for p in paths], "status": "ok", "split": "test",
                                               "duration_s": 0.4, "sample_rate_hz": 16000, "original_label": LABELS}))
        seed_rules(store, load_rules(rules_file("sirens")))
        ids = store.clips().id.tolist()
        store.raise_quarantine(pd.DataFrame({"clip_id": ids, "method": "manual", "reason": "check",
                                             "score": [0.9, 0.8, 0.7, 0.6, 0.5]}), annotator="audit")
        double.set_annotators_per_clip(store, queue="quarantine", annotators=2, actor="lead")
    return root / "session"


@pytest.fixture
def wb(session, tmp_path) -> Workbench:
    bench = Workbench.open(copy_session(session, tmp_path / "session"))
    yield bench
    bench.store.close()


def load(wb: Workbench, viewer: str | None, *, source: str = "quarantine") -> tuple[list[int], dict]:
    ids, _, window, _, _ = handlers.load_queue(wb, source, "open", "", "", "", None, "full", 0, viewer=viewer)
    return ids, json.loads(window)


def press(wb: Workbench, who: str, clip_id: int, *, tag: str, source: str = "quarantine",
          request: gr.Request | None = None, seq: int = 1) -> dict:
    """One key press as earmark.js sends it; returns the result of the command."""
    payload = json.dumps({"commands": [{"seq": seq, "kind": "decide", "clip": clip_id, "seen": None, "action": "tag",
                                        "tag": tag}]})
    window = handlers.run_commands(wb, request, who, payload, [clip_id], 0, seq - 1, None, "full", source, 0)[0]
    return json.loads(window)["results"][0]


def test_the_second_annotator_sees_nothing_of_the_first_answer(wb):
    ids, _ = load(wb, "ana")
    first = ids[0]
    result = press(wb, "ana", first, tag="non_siren_alert")
    assert result == {"seq": 1, "ok": True, "text": f"clip {first}: answered alert_sounds blind (1 of 2)"}
    # nothing the clip's state, log or views derive from changed
    state = wb.store.clip_state(first)
    assert (state["label"], state["quarantined"]) == ("emergency_sirens", True)
    assert wb.store.decisions(annotator="ana").empty
    # ben's queue still holds the clip, and nothing he is sent names ana or her answer
    ben_ids, ben_window = load(wb, "ben")
    assert first in ben_ids
    sent = json.dumps(ben_window) + handlers.load_queue(wb, "quarantine", "open", "", "", "", None, "full", 0,
                                                        viewer="ben")[1].to_json()
    assert "ana" not in sent and "non_siren_alert" not in sent and "alert_sounds blind" not in sent
    assert "0 of 5 in this queue decided since it was loaded" in ben_window["counter"]  # her answer is not counted
    slot = next(s for s in ben_window["slots"] if s["clip"] == first)
    assert "alert_sounds" not in slot["html"].split("em-slot-history")[1]  # the history shows no answer
    # ana's queue no longer holds it; a second press is refused
    assert first not in load(wb, "ana")[0]
    assert not press(wb, "ana", first, tag="true_siren", seq=2)["ok"]
    # the panel shows no round until both answered
    assert "none yet" in report_views(wb)[1].iloc[0, 0]


def test_agreeing_answers_settle_the_clip_by_consensus_naming_both(wb):
    clip = load(wb, "ana")[0][0]
    press(wb, "ana", clip, tag="non_siren_alert")
    result = press(wb, "ben", clip, tag="non_siren_alert")
    assert result["ok"] and "all agree: alert_sounds" in result["text"]
    state = wb.store.clip_state(clip)
    assert (state["label"], state["quarantined"]) == ("alert_sounds", False)
    decision = wb.store.decisions(clip_id=clip).iloc[0]
    answers = wb.store.annotations(clip_id=clip)
    assert decision.annotator == double.CONSENSUS and decision.tag == "non_siren_alert"
    assert decision.note == f"consensus of #{answers.id[0]} ana: alert_sounds, #{answers.id[1]} ben: alert_sounds"
    assert answers.settled_by.tolist() == [decision.id, decision.id]


def test_a_disagreement_waits_for_an_adjudicator_whose_decision_names_both_answers(wb):
    clip = load(wb, "ana")[0][0]
    press(wb, "ana", clip, tag="true_siren")
    result = press(wb, "ben", clip, tag="ambient")
    assert result["ok"] and result["text"].endswith("the annotators disagree: it goes to the adjudication queue")
    assert wb.store.clip_state(clip)["quarantined"] and wb.store.decisions(clip_id=clip).action.tolist() == ["quarantine"]
    # neither annotator is offered it again; the adjudication queue lists both answers
    assert clip not in load(wb, "ana")[0] and clip not in load(wb, "cy")[0]
    ids, window = load(wb, "cy", source=double.ADJUDICATION)
    assert ids == [clip]
    assert "ana: emergency_sirens · ben: environmental_sounds" in window["slots"][0]["html"]
    # an annotator of the clip cannot adjudicate it
    refused = press(wb, "ana", clip, tag="true_siren", source=double.ADJUDICATION)
    assert not refused["ok"] and "someone who did not answer it" in refused["text"]
    decided = press(wb, "cy", clip, tag="true_siren", source=double.ADJUDICATION, seq=2)
    assert decided["ok"] and decided["text"].startswith(f"clip {clip}: adjudicated emergency_sirens")
    final = wb.store.decisions(clip_id=clip).iloc[0]
    answers = wb.store.annotations(clip_id=clip)
    assert (final.annotator, final.action, final.new_label) == ("cy", "tag", "emergency_sirens")
    assert final.note == (f"adjudicated #{answers.id[0]} ana: emergency_sirens, "
                          f"#{answers.id[1]} ben: environmental_sounds")
    resolution = wb.store.annotation_resolutions().iloc[0]
    assert (resolution.kind, list(resolution.annotation_ids)) == ("adjudicated", answers.id.tolist())
    assert load(wb, "cy", source=double.ADJUDICATION)[0] == []
    # undoing the final decision opens the round again
    wb.store.undo(int(final.id), annotator="cy")
    assert load(wb, "cy", source=double.ADJUDICATION)[0] == [clip]


def test_with_a_login_the_logged_in_user_answers_whatever_the_name_box_says(wb):
    dora = gr.Request(username="dora")
    assert handlers.viewer("mallory", dora) == "dora" and handlers.viewer(" ana ", None) == "ana"
    clip = load(wb, handlers.viewer("mallory", dora))[0][0]
    assert press(wb, "mallory", clip, tag="true_siren", request=dora)["ok"]
    assert wb.store.annotations(clip_id=clip).annotator.tolist() == ["dora"]
    assert clip not in load(wb, handlers.viewer("mallory", dora))[0]
    assert clip in load(wb, "mallory")[0]  # mallory has not answered it: dora did


def test_u_withdraws_the_last_blind_answer_and_keep_is_not_an_answer(wb):
    clip = load(wb, "ana")[0][0]
    press(wb, "ana", clip, tag="true_siren")
    payload = json.dumps({"commands": [{"seq": 2, "kind": "undo"}]})
    window = json.loads(handlers.run_commands(wb, None, "ana", payload, [clip], 1, 1, None, "full", "quarantine", 0)[0])
    assert window["results"][0]["text"] == f"withdrew your answer emergency_sirens on clip {clip}"
    assert wb.store.annotations(clip_id=clip).withdrawn.tolist() == [True]
    assert clip in load(wb, "ana")[0]
    keep = json.dumps({"commands": [{"seq": 3, "kind": "decide", "clip": clip, "seen": 0, "action": "keep"}]})
    window = json.loads(handlers.run_commands(wb, None, "ana", keep, [clip], 0, 2, None, "full", "quarantine", 0)[0])
    assert not window["results"][0]["ok"] and "'keep quarantined' is not an answer" in window["results"][0]["text"]
    press(wb, "ben", clip, tag="true_siren")
    with pytest.raises(StoreError, match="only they can withdraw"):
        wb.store.withdraw_annotation(int(wb.store.annotations(annotator="ben").id.iloc[0]), annotator="ana")


def test_a_blind_queue_without_a_name_loads_empty_and_a_single_queue_is_unchanged(wb):
    with pytest.warns(UserWarning, match="Enter your name"):  # gr.Warning, a toast in the page
        assert load(wb, None)[0] == []
    double.set_annotators_per_clip(wb.store, queue="quarantine", annotators=1, actor="lead")
    assert len(load(wb, None)[0]) == 5
    clip = load(wb, None)[0][0]
    assert press(wb, "ana", clip, tag="true_siren")["text"].startswith(f"clip {clip}: tagged true_siren")
    assert wb.store.annotations().empty
    with pytest.raises(ValueError, match="queue must be one of"):
        double.set_annotators_per_clip(wb.store, queue="nope", annotators=2, actor="lead")
    with pytest.raises(ValueError, match="from 1 to 10"):
        double.set_annotators_per_clip(wb.store, queue="quarantine", annotators=0, actor="lead")


def test_the_cli_sets_a_queue_and_prints_the_agreement_table(session, tmp_path, capsys):
    copy = copy_session(session, tmp_path / "session")
    assert app.main(["queue-mode", "--session", str(copy), "--queue", "misclassified", "--annotators", "3",
                     "--actor", "lead"]) == 0
    assert "queue misclassified: 3 annotators per clip, blind" in capsys.readouterr().out
    with Store.open(copy) as store:
        assert double.annotators_per_clip(store, "misclassified") == 3
        clips = store.clips().id.tolist()
        for clip, (a, b) in zip(clips, [("true_siren", "true_siren"), ("true_siren", "ambient"),
                                        ("ambient", "ambient")]):
            double.annotate(store, clip, queue="quarantine", annotator="ana", action="tag", tag=a)
            double.annotate(store, clip, queue="quarantine", annotator="ben", action="tag", tag=b)
    assert app.main(["agreement", "--session", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "all classes" in out and "ana \\ ben" in out and "no model" in out
    assert app.main(["agreement", "--session", str(copy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    overall = report["agreement"][0]
    assert (overall["class"], overall["units"]) == ("all classes", 3)
    assert overall["observed"] == pytest.approx(2 / 3)
    # ana: s s a / ben: s a a -> po 2/3, pe (2*1 + 1*2) / 9 = 4/9 -> kappa (6 - 4) / (9 - 4) = 2/5
    assert overall["kappa"] == pytest.approx(2 / 5)
    assert {row["annotator"]: row["blind_answers"] for row in report["throughput"]} == {"ana": 3, "ben": 3}
    assert app.main(["queue-mode", "--session", str(copy), "--queue", "quarantine", "--annotators", "0"]) == 2


def test_an_older_session_gains_the_annotation_log_and_a_blind_answer_leaves_every_label_as_it_was(tmp_path,
                                                                                                    monkeypatch):
    from core.store import MIGRATIONS, SCHEMA_VERSION
    session = tmp_path / "session"
    with monkeypatch.context() as before:
        before.setattr("core.store.MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 5])
        before.setattr("core.store.SCHEMA_VERSION", 5)
        with Store.open(session) as old:
            dataset = old.add_dataset(name="d", root=tmp_path, layout="folder")
            old.add_clips(dataset, pd.DataFrame({"path": ["a.wav"], "status": "ok", "original_label": "dog"}))
    with Store.open(session) as store:
        assert store.schema_version == SCHEMA_VERSION
        clip = int(store.clips().id.iloc[0])
        before_labels = store.labels()
        store.record_annotation(clip, queue="quarantine", annotator="ana", action="relabel", new_label="cat",
                                set_excluded=False, set_quarantined=False)
        pd.testing.assert_frame_equal(store.labels(), before_labels)
        assert store._df("SELECT label FROM current_labels").label.tolist() == ["dog"]
        with pytest.raises(ValueError, match="action must be one of"):
            store.record_annotation(clip, queue="quarantine", annotator="ana", action="undo")


def test_out_of_fold_probabilities_are_put_in_the_model_class_order_or_not_used():
    ranked = pd.DataFrame({"clip_id": [7, 8], "label": ["siren", "dog"],  # the audit's columns: dog, siren
                           "probs": [[0.2, 0.8], [0.9, 0.1]]})
    borrowed = double.out_of_fold_probs(ranked, ["siren", "dog"])
    assert borrowed[7].tolist() == [0.8, 0.2] and borrowed[8].tolist() == [0.1, 0.9]
    assert double.out_of_fold_probs(ranked, ["siren", "dog", "cat"]) == {}


@pytest.mark.slow
def test_the_production_model_lends_its_audits_out_of_fold_probabilities(trained_demo_session, tmp_path):
    session = copy_session(trained_demo_session, tmp_path / "session")
    with Store.open(session) as store:
        run = store.runs(kind="train").id.iloc[0]
        assert double._production_probs(store) is None  # nothing in production yet: no model to weigh
        store.record_promotion(run, action="promote", actor="test")
        classes, own = double._production_probs(store)
        predicted = store.predictions(run).set_index("clip_id")
        audit_dir = session / "runs" / "audit-with-ranking"
        (audit_dir / "crossval").mkdir(parents=True)
        clips = predicted.index[:len(classes)].astype(int).tolist()
        pool = sorted(classes)
        pd.DataFrame({"clip_id": clips, "label": pool,
                      "probs": [list(np.eye(len(pool))[-1]) for _ in clips]}).to_parquet(
            audit_dir / "crossval" / "label_issues.parquet")
        store.create_run("audit-with-ranking", kind="audit", preset=None, config={"splits": ["train"]},
                         parent_run_id=run, manifest_decision_id=store.last_decision_id(), run_dir=audit_dir,
                         status="succeeded")
        _, lent = double._production_probs(store)
        assert lent[clips[0]][classes.index(pool[-1])] == 1.0  # the out-of-fold column, in the model's order
        other = int(predicted.index[len(classes)])
        assert np.allclose(lent[other], own[other])  # a clip the audit did not cross-validate keeps its own
