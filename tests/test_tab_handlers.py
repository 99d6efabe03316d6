"""The Confusions and Data tabs' handlers without a browser: plain values in, the outputs' new
values out, on a real session (DuckDB store, WAV files on disk). A run's results are ingested as
the writer ingests a finished child's (predictions and the class order in its frozen manifest),
so no training is needed; the browser tests keep the flows."""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
import yaml

from conftest import tone, write_wav
from core import review
from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Rule, Store
from workbench import augment_preview, confusions_tab, data_tab
from workbench.context import Workbench, safe

CLASSES = ["alert_sounds", "emergency_sirens", "road_traffic"]
# (given label, predicted, confidence) of each test clip, in clip id order: two sirens heard as
# alerts make the busiest mistake, true emergency_sirens -> predicted alert_sounds.
PREDICTED = [("alert_sounds", "alert_sounds", 0.9), ("alert_sounds", "alert_sounds", 0.8),
             ("emergency_sirens", "alert_sounds", 0.7), ("emergency_sirens", "alert_sounds", 0.95),
             ("emergency_sirens", "emergency_sirens", 0.6), ("road_traffic", "road_traffic", 0.85)]
RUN = "20260101-000000-train-test"


@pytest.fixture
def wb(tmp_path) -> Workbench:
    """Six short tones as test clips, the sirens rules, and one succeeded, promoted run."""
    audio = tmp_path / "audio"
    paths = []
    for i, (label, _, _) in enumerate(PREDICTED):
        paths.append(write_wav(audio / label / f"{label}-{i}.wav", tone(300.0 + 150 * i, seconds=0.5)).relative_to(audio))
    bench = Workbench.open(tmp_path / "session")
    store = bench.store
    dataset = store.add_dataset(name="tones", root=audio, layout="folder")
    store.add_clips(dataset, pd.DataFrame({"path": [p.as_posix() for p in paths], "status": "ok", "split": "test",
                                           "duration_s": 0.5, "sample_rate_hz": 16000,
                                           "original_label": [label for label, _, _ in PREDICTED]}))
    seed_rules(store, load_rules(rules_file("sirens")))
    run_dir = tmp_path / "session" / "runs" / RUN
    run_dir.mkdir(parents=True)
    pd.DataFrame({"label": CLASSES}).to_parquet(run_dir / "manifest.parquet")  # the run's class order
    store.create_run(RUN, kind="train", preset="demo-fast", config=None, parent_run_id=None,
                     manifest_decision_id=store.last_decision_id(), run_dir=run_dir)
    ids = store.clips().id.tolist()
    store.ingest_run_results(RUN, predictions=pd.DataFrame({
        "clip_id": ids, "split": "test", "label": [label for label, _, _ in PREDICTED],
        "predicted": [p for _, p, _ in PREDICTED], "confidence": [c for _, _, c in PREDICTED],
        "probs": [[c if name == p else (1 - c) / 2 for name in CLASSES] for _, p, c in PREDICTED]}))
    store.set_run_status(RUN, "succeeded")
    store.record_promotion(RUN, action="promote", actor="test")
    yield bench
    store.close()


def clip_ids(wb: Workbench) -> list[int]:
    return wb.store.clips().id.tolist()


# --- Confusions ---------------------------------------------------------------------------------
def test_show_run_draws_the_matrix_that_fits_its_box_and_empties_cell_and_clip(wb, tmp_path):
    out = confusions_tab.show_run(wb, tmp_path, RUN, "test", "clips")
    heatmap, matrix, metrics, overall, classes, cell, title, cell_rows, player, side, history, clip, seen, message = out
    assert Path(heatmap).is_file() and Path(heatmap).stat().st_size > 0
    assert classes == CLASSES and cell is None and clip is None and seen is None
    assert title == confusions_tab.NO_CELL and cell_rows.empty and player == confusions_tab.NO_CLIP and message == ""
    assert f"Run `{RUN}`, **test** split, 6 clips" in overall and "this is the production run" in overall
    shown = matrix.value["data"]
    assert [row[0] for row in shown] == CLASSES
    assert shown[1][1] == "2 (67%)" and shown[1][2] == "1 (33%)"  # true sirens: 2 heard as alerts, 1 right
    # Widths add up to at most the table (more gives a scroll bar over the last row) ...
    widths = [float(w.rstrip("%")) for w in matrix.column_widths]
    assert len(widths) == 1 + len(CLASSES) and 99 <= sum(widths) <= 100
    # ... and the height leaves room for every row (header + the tallest wrapped rows).
    assert matrix.max_height == confusions_tab.MATRIX_HEADER_PX + confusions_tab.MATRIX_ROW_PX * len(CLASSES)


def test_show_run_without_a_run_says_so(wb, tmp_path):
    out = confusions_tab.show_run(wb, tmp_path, None, "test", "clips")
    assert out[0] is None and out[3] == confusions_tab.NO_RUN and out[4] == []


def test_refresh_runs_keeps_the_chosen_run_and_falls_back_to_production(wb, tmp_path):
    kept = confusions_tab.refresh_runs(wb, tmp_path, RUN, "test", "clips")
    assert kept[0].value == RUN and [value for _, value in kept[0].choices] == [RUN]
    gone = confusions_tab.refresh_runs(wb, tmp_path, "a-run-that-was-never-made", "test", "clips")
    assert gone[0].value == RUN and gone[5] == CLASSES


def test_picking_a_cell_lists_its_clips_most_confident_first(wb):
    ids = clip_ids(wb)
    chosen, title, rows, player, *_, message = confusions_tab.pick_cell(wb, RUN, "test", CLASSES, (1, 1))
    assert chosen == ("emergency_sirens", "alert_sounds")
    assert title == "**true emergency_sirens → predicted alert_sounds**: 2 clips"
    assert rows.clip_id.tolist() == [ids[3], ids[2]]  # confidence 0.95, then 0.7
    assert player == confusions_tab.NO_CLIP and message == ""
    with pytest.raises(ValueError, match="not the class name"):
        confusions_tab.pick_cell(wb, RUN, "test", CLASSES, (1, 0))


def test_picking_a_clip_shows_its_player_probabilities_and_what_was_seen(wb):
    rows = confusions_tab.pick_cell(wb, RUN, "test", CLASSES, (1, 1))[2]
    player, side, history, clip, seen, message = confusions_tab.pick_clip(wb, RUN, rows, "full", 0)
    assert clip == int(rows.clip_id.iloc[0]) and seen == 0 and message == ""
    assert f'data-clip="{clip}"' in player and "No decisions on this clip yet" in history
    assert "alert_sounds" in side and "0.950" in side  # the run's probability of its prediction


def test_relabel_refusals_name_what_is_missing_and_write_nothing(wb):
    ids = clip_ids(wb)
    args = (RUN, "test", ("emergency_sirens", "alert_sounds"))
    with pytest.raises(ValueError, match="Select a clip in a cell first"):
        confusions_tab.relabel_clip(wb, None, "ana", *args, None, None, "full", "", "road_traffic")
    with pytest.raises(ValueError, match="Enter your name"):
        confusions_tab.relabel_clip(wb, None, "  ", *args, ids[3], 0, "full", "", "road_traffic")
    with pytest.raises(ValueError, match="Choose a class in 'relabel to' first"):
        confusions_tab.relabel_clip(wb, None, "ana", *args, ids[3], 0, "full", "", None)
    with pytest.raises(ValueError, match="Write a reason first"):
        confusions_tab.quarantine_clip(wb, None, "ana", *args, ids[3], 0, "full", "   ")
    assert wb.store.decisions().empty
    # A refusal reaches Gradio as one skip: every output of the event stays as it was.
    with pytest.warns(UserWarning, match="Select a clip in a cell first"):  # the toast, outside a request
        skipped = safe(confusions_tab.relabel_clip)(wb, None, "ana", *args, None, None, "full", "", "road_traffic")
    assert skipped == gr.skip()


def test_relabel_marks_the_cell_stale_and_a_later_decision_by_another_is_a_conflict(wb):
    ids = clip_ids(wb)
    chosen = ("emergency_sirens", "alert_sounds")
    out = confusions_tab.relabel_clip(wb, None, "ana", RUN, "test", chosen, ids[3], 0, "full", " horn ", "road_traffic")
    message, reason, matrix, title, rows, player, side, history, clip, seen = out
    decision = int(wb.store.decisions().id.iloc[0])
    assert message == (f'<span class="em-message-ok">clip {ids[3]}: relabelled road_traffic (decision {decision})'
                       "</span>")
    assert reason == "" and clip == ids[3] and seen == decision
    assert title.endswith("2 clips, 1 relabelled since this run (stale)")
    assert matrix.value["data"][1][1] == "2 (67%) · stale 1"
    state = wb.store.clip_state(ids[3])
    assert state["label"] == "road_traffic" and wb.store.decisions().note.iloc[0] == "horn"
    # Bo saw the clip before Ana's relabel: his decision is refused, not silently laid over hers.
    with pytest.raises(review.ReviewConflict, match="already decided by ana"):
        confusions_tab.relabel_clip(wb, None, "bo", RUN, "test", chosen, ids[3], 0, "full", "", "alert_sounds")
    assert len(wb.store.decisions()) == 1


def test_quarantine_from_a_cell_records_the_reason_and_the_cell(wb):
    ids = clip_ids(wb)
    out = confusions_tab.quarantine_clip(wb, None, "ana", RUN, "test", ("emergency_sirens", "alert_sounds"), ids[2], 0,
                                         "0-4 kHz", "listen again")
    assert "sent to the quarantine queue" in out[0]
    entry = wb.store.quarantine_queue().set_index("clip_id").loc[ids[2]]
    assert entry.reason == (f"listen again [confusion cell of run {RUN}: true emergency_sirens, "
                            "predicted alert_sounds]")


# --- Data: statistics, import, export -------------------------------------------------------------
def test_show_stats_counts_the_session(wb):
    totals, per_class, long, hist, unreadable = data_tab.show_stats(wb)
    assert totals.startswith("**6** clips in 1 datasets (tones): 6 usable, **0 unreadable**")
    assert per_class.set_index("class")["total"].to_dict() == {"alert_sounds": 2, "emergency_sirens": 3,
                                                               "road_traffic": 1}
    assert set(long.columns) == {"class", "split", "clips"} and long.clips.sum() == 6
    assert hist.clips.sum() == 6 and hist.duration.tolist() == ["0-1 s"]  # no empty bins beyond the data
    assert unreadable.empty


def test_import_refuses_an_empty_path_then_adds_a_folder_and_its_broken_file(wb, tmp_path):
    with pytest.raises(ValueError, match="Type the path"):
        data_tab.run_import(wb, None, "  ", "auto", data_tab.NO_CLASS_MAP, False, "", "", "", 0)
    folder = tmp_path / "extra"
    for i in range(3):
        write_wav(folder / "horn" / f"horn-{i}.wav", tone(700.0 + 10 * i, seconds=0.8))
    (folder / "horn" / "broken.wav").write_text("not audio")
    summary, totals, per_class, *_, unreadable = data_tab.run_import(wb, None, str(folder), "auto",
                                                                     data_tab.NO_CLASS_MAP, False, "", "", "", 0)
    assert "dataset &#x27;extra&#x27; (folder): 4 files found: 3 readable added, 1 unreadable recorded" in summary
    assert "in 2 datasets (tones, extra)" in totals and "**1 unreadable**" in totals
    assert per_class.set_index("class").loc["horn", "total"] == 3
    assert unreadable.path.tolist() == ["horn/broken.wav"]


def test_export_offers_a_copy_of_the_manifest(wb, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    offered, message = data_tab.run_export(wb, downloads, "csv")
    name = Path(offered.value["path"]).name
    assert name == f"manifest-asof-{wb.store.last_decision_id()}.csv" and offered.visible is True
    assert (wb.session_dir / "exports" / name).is_file()
    assert sorted(pd.read_csv(downloads / name).clip_id) == clip_ids(wb)  # the copy Gradio serves
    assert "as of decision" in message


# --- Data: relabel rules ----------------------------------------------------------------------------
def test_the_rules_table_lists_the_session_rules_by_hotkey(wb):
    table = data_tab.rules_frame(wb)
    assert table.columns.tolist() == data_tab.RULE_COLUMNS
    assert table.hotkey.tolist() == list("123456")
    assert table.iloc[5][["tag", "action", "target label", "keeps quarantined"]].tolist() == [
        "ambiguous_drone", "exclude", "", "yes"]


def test_picking_a_rule_fills_the_form_as_the_store_holds_it(wb):
    table = data_tab.rules_frame(wb)
    assert data_tab.pick_rule(wb, table, 2) == ["ambient", "relabel", "environmental_sounds", "3", False,
                                                "Ambient/environmental sound."]
    stale = pd.DataFrame([["9", "gone", "keep", "", "no", ""]], columns=data_tab.RULE_COLUMNS)
    with pytest.raises(ValueError, match="'gone' is no longer in the session"):
        data_tab.pick_rule(wb, stale, 0)


def test_a_non_relabel_action_empties_and_locks_the_target(wb):
    locked = data_tab.target_for_action("exclude")
    assert locked.value is None and locked.interactive is False
    assert data_tab.target_for_action("relabel").interactive is True


def test_saving_adds_a_rule_and_an_edit_applies_to_later_tags_only(wb):
    ids = clip_ids(wb)
    message, table = data_tab.save_rule(wb, " horn_like ", "relabel", "alert_sounds", "7", False, "a car horn")
    assert message == ('<span class="em-message-ok">rule horn_like -&gt; relabel alert_sounds, release added: it '
                       "applies to tags recorded from now on</span>")
    assert table.tag.tolist()[-1] == "horn_like" and table.hotkey.tolist()[-1] == "7"

    first = review.apply_tag(wb.store, ids[2], tag="ambient", annotator="ana")
    message, table = data_tab.save_rule(wb, "ambient", "relabel", "road_traffic", "3", True, "edited")
    assert "rule ambient -&gt; relabel road_traffic, keep quarantined changed" in message
    assert "the 1 earlier decisions with this tag keep what they set" in message
    # The decision already made keeps its label and its rule text; the next tag uses the edit.
    assert wb.store.clip_state(ids[2])["label"] == "environmental_sounds"
    assert wb.store.decisions().set_index("id").loc[first, "rule"] == "ambient -> relabel environmental_sounds, release"
    review.apply_tag(wb.store, ids[3], tag="ambient", annotator="ana")
    later = wb.store.clip_state(ids[3])
    assert later["label"] == "road_traffic" and later["quarantined"]
    assert table.set_index("tag").loc["ambient", "target label"] == "road_traffic"


@pytest.mark.parametrize("form, field", [
    (("", "relabel", "alert_sounds", "7", False, ""), "rule tag: '' must be a non-empty name"),
    (("horn", "relabel", "", "7", False, ""), "rule 'horn': a relabel rule needs a target_label"),
    (("horn", "exclude", "alert_sounds", "7", False, ""), "rule 'horn': only a relabel rule has a target_label"),
    (("horn", None, None, "7", False, ""), "rule 'horn': action must be one of"),
    (("horn", "keep", None, "12", False, ""), "rule 'horn': hotkey must be one digit, got '12'"),
    (("horn", "keep", None, "1", False, ""), "rule 'horn': hotkey 1 is already the key of rule 'true_siren'"),
    (("ambient", "relabel", "road_traffic", "1", False, ""), "rule 'ambient': hotkey 1 is already the key of rule 'true_siren'"),
])
def test_a_bad_rule_is_refused_in_one_line_naming_the_field_and_nothing_is_written(wb, form, field):
    before = wb.store.rules()
    with pytest.raises(ValueError) as refused:
        data_tab.save_rule(wb, *form)
    assert str(refused.value).startswith(field) and "\n" not in str(refused.value)
    assert wb.store.rules() == before
    with pytest.warns(UserWarning, match=re.escape(field)):  # the toast, outside a request
        assert safe(data_tab.save_rule)(wb, *form) == gr.skip()


# --- Data: augmentation preview -------------------------------------------------------------------
def test_preset_fields_fill_the_list_and_noise_bank_from_a_preset(wb):
    assert augment_preview.preset_fields(None) == ["[]", ""]
    text, bank = augment_preview.preset_fields("sirens-focused")
    assert [step["name"] for step in yaml.safe_load(text)][:2] == ["time_stretch", "pitch_shift"]
    assert isinstance(bank, str)


def test_a_preview_is_refused_without_a_clip_or_a_list_and_reproducible_with_a_seed(wb, tmp_path):
    clip = clip_ids(wb)[0]
    with pytest.raises(ValueError, match="Type the id of a clip"):
        augment_preview.run_preview(wb, tmp_path, None, None, "[]", 0, True, "full", "")
    with pytest.raises(ValueError, match="The augmentation list is empty"):
        augment_preview.run_preview(wb, tmp_path, clip, None, "[]", 0, True, "full", "")
    text = "- name: gain\n  p: 0.0\n  params: {min_gain_db: -6, max_gain_db: -6}\n"
    before, after, steps, log_mels = augment_preview.run_preview(wb, tmp_path, clip, None, text, 3, True, "full", "")
    assert f'data-clip="{clip}"' in before and 'src="data:audio/wav;base64,' in after
    assert after != before  # the gained copy is other audio
    assert steps.columns.tolist() == augment_preview.STEP_COLUMNS and steps.name.tolist() == ["gain"]  # p forced to 1
    assert Path(log_mels.value["path"]).is_file() and log_mels.visible is True
    again = augment_preview.run_preview(wb, tmp_path, clip, None, text, 3, True, "full", "")
    assert again[1] == after and again[2].equals(steps)


def test_a_relative_noise_bank_in_the_preview_is_a_folder_of_the_session(wb, tmp_path):
    assert augment_preview.preset_fields("speech-cnn")[1] == "noise_bank"  # filled as the preset writes it
    session = Path(wb.store.session_dir)
    write_wav(session / "noise_bank" / "noise" / "hum.wav", tone(90.0, seconds=1.0))
    clip, text = clip_ids(wb)[0], "- name: background_noise\n  params: {min_snr_db: 5, max_snr_db: 5}\n"
    steps = augment_preview.run_preview(wb, tmp_path, clip, None, text, 0, True, "full", "noise_bank")[2]
    assert steps.name.tolist() == ["background_noise"] and '"file": "noise/hum.wav"' in steps.params[0]
    with pytest.raises(ValueError, match=re.escape(f"noise_bank: '{session.resolve() / 'nowhere'}' is not a folder")):
        augment_preview.run_preview(wb, tmp_path, clip, None, text, 0, True, "full", "nowhere")
