"""The inbox (A10): adding unlabelled audio, uncertainty ranking, labelling and moving, the
training manifests that must never see an unlabelled clip, scoring as a child job, re-scoring
after a fine-tune, and the CLI's refusals."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import app
from conftest import copy_session, tone, write_wav
from core import review
from core.config import ConfigError
from core.inbox_placement import grouped_split
from core.store import UNLABELLED_SPLIT, Store, StoreError
from core.uncertainty import InboxConfig, queue_size, rank_uncertain, uncertainty_scores
from pipelines.finetune import freeze_manifest
from pipelines.finetune_audit_gates import audit_then_gates
from pipelines.importing import DatasetImportError
from pipelines.inbox import add_to_inbox, inbox_clips, latest_scoring, score_inbox, uncertain_queue
from pipelines.review_queue import build_queue

PROBS = np.array([[0.9, 0.05, 0.05],   # sure
                  [0.4, 0.35, 0.25],   # unsure, two close classes
                  [0.34, 0.33, 0.33],  # unsure about everything
                  [0.5, 0.5, 0.0]])    # a tie between two classes, the third ruled out
CLASSES = ["alert", "siren", "speech"]


# --- scores and ranking on known probabilities ----------------------------------------------
def test_uncertainty_scores_on_known_probabilities():
    np.testing.assert_allclose(uncertainty_scores(PROBS, method="least_confident"), [0.1, 0.6, 0.66, 0.5])
    np.testing.assert_allclose(uncertainty_scores(PROBS, method="margin"), [0.15, 0.95, 0.99, 1.0])
    entropy = uncertainty_scores(PROBS, method="entropy")
    expected_tie = math.log(2) / math.log(3)  # two equal classes of three
    assert entropy[3] == pytest.approx(expected_tie)
    assert entropy[2] == pytest.approx(1.0, abs=1e-3) and entropy[0] < 0.4
    with pytest.raises(ValueError, match="method: 'random' is not an uncertainty method"):
        uncertainty_scores(PROBS, method="random")


def test_ranking_orders_by_method_and_filters_a_class_of_interest():
    assert rank_uncertain(PROBS, classes=CLASSES, method="least_confident").position.tolist() == [2, 1, 3, 0]
    assert rank_uncertain(PROBS, classes=CLASSES, method="margin").position.tolist() == [3, 2, 1, 0]
    assert rank_uncertain(PROBS, classes=CLASSES, method="entropy").position.tolist()[0] == 2
    sirens = rank_uncertain(np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.1, 0.55, 0.35]]), classes=CLASSES,
                            class_of_interest="siren")
    assert sirens.position.tolist() == [2, 0] and set(sirens.predicted) == {"siren"}
    assert sirens["rank"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="class_of_interest: 'drone' is not a class"):
        rank_uncertain(PROBS, classes=CLASSES, class_of_interest="drone")


def test_queue_size_is_the_expected_errors_capped_by_the_budget():
    assert queue_size(PROBS) == (2, "K = 2: the model is expected to get 1.9 of these 4 clips wrong")  # 0.1+0.6+0.66+0.5
    assert queue_size(PROBS, budget=1)[0] == 1
    assert queue_size(PROBS, k=3)[0] == 3
    assert queue_size(PROBS, k=10)[0] == 4
    assert queue_size(np.array([[1.0, 0.0]]))[0] == 1  # a confident inbox still offers one clip
    with pytest.raises(ConfigError, match="inbox.k: 0 must be a whole number"):
        InboxConfig(k=0)


# --- adding unlabelled audio ------------------------------------------------------------------
def _inbox_folder(root, *, recordings: int = 3, per_recording: int = 2):
    """rec<r>_<n>.wav tones (source group = recording), one truncated file, one 8 kHz file."""
    folder = root / "live"
    for r in range(recordings):
        for n in range(per_recording):
            write_wav(folder / f"rec{r}_{n}.wav", tone(500 + 300 * r + 50 * n, seconds=2.0))
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    write_wav(folder / "phone" / "low_rate.wav", tone(300, seconds=2.0, sample_rate_hz=8000), 8000)
    return folder


@pytest.fixture
def demo_copy(small_demo_session, tmp_path):
    return copy_session(small_demo_session, tmp_path / "session")


def test_inbox_add_records_bad_and_odd_rate_files_and_adds_nothing_twice(demo_copy, tmp_path):
    folder = _inbox_folder(tmp_path)
    with Store.open(demo_copy) as store:
        before = store.clip_count()
        summary = add_to_inbox(store, folder, group_pattern=r"^(rec\d+)_", progress=False)
        assert (summary.found, summary.readable, summary.unreadable) == (8, 6, 2)
        reasons = dict(summary.unreadable_examples)
        assert reasons["phone/low_rate.wav"].startswith("odd sample rate: 8000 Hz, below the 16000 Hz")
        assert reasons["broken.wav"].startswith("unreadable")
        clips = inbox_clips(store)
        assert len(clips) == 8 and clips.open.sum() == 6 and clips.label.isna().all()
        assert set(clips.split) == {UNLABELLED_SPLIT}
        assert set(clips[clips.status == "ok"].source_group) == {"rec0", "rec1", "rec2"}
        again = add_to_inbox(store, folder, group_pattern=r"^(rec\d+)_", progress=False)
        assert (again.added, again.already_imported, store.clip_count()) == (0, 8, before + 8)
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "readme.txt").write_text("no audio here")
        with pytest.raises(DatasetImportError, match="no audio files"):
            add_to_inbox(store, tmp_path / "notes", progress=False)
        demo_name = store.datasets().name.iloc[0]
        with pytest.raises(StoreError, match="holds labelled clips"):
            add_to_inbox(store, folder, name=demo_name, progress=False)
        assert store.clip_count() == before + 8


def test_unlabelled_clips_never_enter_a_training_manifest(demo_copy, tmp_path):
    with Store.open(demo_copy) as store:
        add_to_inbox(store, _inbox_folder(tmp_path), progress=False)
        inbox = inbox_clips(store)
        # Even a label recorded straight into the log (no move) keeps the clip out while it is unlabelled-split.
        store.record_decision(int(inbox.clip_id.iloc[0]), annotator="ann", action="relabel", new_label="siren")
        manifest, _ = freeze_manifest(store, quarantined_in=("train", "val", "test"))
        assert not manifest.clip_id.isin(inbox.clip_id).any()
        assert set(manifest.split) <= {"train", "val", "test"}


def test_labelling_moves_the_clip_with_its_source_group_and_undo_returns_it(demo_copy, tmp_path):
    with Store.open(demo_copy) as store:
        add_to_inbox(store, _inbox_folder(tmp_path), group_pattern=r"^(rec\d+)_", progress=False)
        inbox = inbox_clips(store).query("open").set_index("path")
        first, partner = int(inbox.at["rec0_0.wav", "clip_id"]), int(inbox.at["rec0_1.wav", "clip_id"])
        review.relabel(store, first, label="siren", annotator="ann")
        state = store.clip_state(first)
        assert (state["label"], state["split"], state["source_group"]) == ("siren", "train", "rec0")
        move = store.decisions(clip_id=first).iloc[1]
        assert move.action == "move" and move.set_split == "train" and "rec0" in move.note
        assert first in set(freeze_manifest(store)[0].clip_id)
        # A recording whose group already sits in val: its inbox clips join val, whatever the assignment says.
        val_group = store.labels().query("split == 'val'").source_group.iloc[0]
        store.record_decision(partner, annotator="ann", action="move", set_group=val_group)
        review.apply_tag(store, partner, tag=store.rules()[0].tag, annotator="ann")
        assert store.clip_state(partner)["split"] == "val"
        # Undo takes back the label only: the clip is unlabelled (and untrained) again, back in the inbox.
        review.undo(store, int(review.last_undoable(store, annotator="ann")["id"]), annotator="ann")
        assert store.clip_state(partner)["label"] is None or pd.isna(store.clip_state(partner)["label"])
        assert partner in set(inbox_clips(store).query("open").clip_id)
        assert partner not in set(freeze_manifest(store)[0].clip_id)


def test_grouped_assignment_keeps_a_group_in_one_split_and_spreads_groups():
    draws = [grouped_split(f"rec{i}", seed=3) for i in range(400)]
    assert grouped_split("rec7", seed=3) == draws[7]
    shares = pd.Series(draws).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.08) and shares["test"] == pytest.approx(0.2, abs=0.06)


# --- the CLI's refusals -------------------------------------------------------------------------
def test_cli_refuses_a_missing_folder_no_session_and_no_model(demo_copy, tmp_path, capsys):
    assert app.main(["inbox", "add", "--session", str(demo_copy), str(tmp_path / "nope")]) == 2
    assert "earmark: error: nothing to add at" in capsys.readouterr().err
    assert app.main(["inbox", "add", "--session", str(tmp_path / "no-session"), str(_inbox_folder(tmp_path))]) == 2
    assert "no session at" in capsys.readouterr().err and not (tmp_path / "no-session").exists()
    assert app.main(["inbox", "add", "--session", str(demo_copy), "--quiet", str(tmp_path / "live")]) == 0
    assert "6 readable added, 2 unreadable recorded" in capsys.readouterr().out
    assert app.main(["inbox", "score", "--session", str(demo_copy), "--quiet"]) == 2
    assert "no production model yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse's own refusal
        app.main(["inbox", "score", "--session", str(demo_copy), "--method", "coin"])
    assert refused.value.code == 2 and "invalid choice: 'coin'" in capsys.readouterr().err


# --- scoring, the queue, and the loop (a trained model) -------------------------------------------
@pytest.fixture(scope="module")
def scored_session(trained_demo_session, tmp_path_factory):
    """The trained small demo, its run promoted, an inbox of six clips added and scored."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("inbox") / "session")
    with Store.open(session) as store:
        store.record_promotion(store.runs(kind="train").id.iloc[0], action="promote", actor="test")
        add_to_inbox(store, _inbox_folder(session.parent), group_pattern=r"^(rec\d+)_", progress=False)
        outcome = score_inbox(store, progress=False, method="margin", k=4)
        assert outcome.status == "succeeded", outcome.error
    return session


@pytest.mark.slow
def test_scoring_ranks_the_inbox_and_labelling_a_clip_takes_it_off_the_queue(scored_session, tmp_path, capsys):
    session = copy_session(scored_session, tmp_path / "session")
    with Store.open(session) as store:
        scoring = latest_scoring(store)
        predictions = store.predictions(scoring["id"])
        assert len(predictions) == 6 and predictions.label.isna().all()  # the two bad files were never scored
        queue = uncertain_queue(store)
        assert len(queue) == 4 and (queue.status == "open").all()
        assert queue.score.is_monotonic_decreasing
        assert queue.reason.iloc[0].startswith("uncertain #1: margin")
        shown = build_queue(store, source="uncertain", label=queue.predicted.iloc[0])
        assert len(shown) and (shown.predicted == queue.predicted.iloc[0]).all()
        top = int(queue.clip_id.iloc[0])
        review.apply_tag(store, top, tag=store.rules()[0].tag, annotator="ann")
        assert top not in set(build_queue(store, source="uncertain").clip_id)  # open only, by default
        assert build_queue(store, source="uncertain", status="resolved").clip_id.tolist() == [top]
        assert top in set(freeze_manifest(store)[0].clip_id)
        assert app.main(["inbox", "queue", "--session", str(session), "--json"]) == 0  # a snapshot, beside the writer
        listed = json.loads(capsys.readouterr().out)
        assert [row["clip_id"] for row in listed] == queue.clip_id.iloc[1:].tolist()
        # A class of interest the model does not know is refused before a run is made.
        runs = len(store.runs())
        with pytest.raises(ConfigError, match="class_of_interest: 'drone' is not a class"):
            score_inbox(store, progress=False, class_of_interest="drone")
        assert len(store.runs()) == runs


@pytest.mark.slow
def test_the_after_training_chain_rescores_the_inbox(scored_session, tmp_path):
    """audit_then_gates is what runs after every fine-tune (the CLI's finetune and the job queue):
    the inbox is ranked again by the run it audited, with the last scoring's settings."""
    session = copy_session(scored_session, tmp_path / "session")
    with Store.open(session) as store:
        first = latest_scoring(store)
        labelled = int(uncertain_queue(store).clip_id.iloc[0])
        review.apply_tag(store, labelled, tag=store.rules()[0].tag, annotator="ann")
        trained = store.runs(kind="train").id.iloc[0]
        result = audit_then_gates(store, run_id=trained)
        audited = pd.read_parquet(Path(store.run(result.audit_run_id)["run_dir"]) / "manifest.parquet")
        inbox = inbox_clips(store)
        assert labelled in set(audited.clip_id)  # labelled and moved to train: audited like any clip
        assert not audited.clip_id.isin(inbox[inbox.label.isna()].clip_id).any()  # never an unlabelled one
        scoring = latest_scoring(store)
        assert result.gates is not None and scoring["id"] != first["id"]
        assert scoring["parent_run_id"] == trained
        assert scoring["config"]["inbox"]["method"] == "margin" and scoring["config"]["inbox"]["k"] == 4
        assert result.inbox_lines[0].startswith(f"inbox scoring {scoring['id']} with run {trained}: succeeded")
        assert scoring["summary"]["scored"] == 5  # the labelled clip is no longer scored
