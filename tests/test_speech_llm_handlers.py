"""The audio LLM in the Train and Runs tabs' handlers, without a browser: its form fields become
dotted overrides, a base model that cannot be read here is named in the form's message and
refused by Fine-tune and Search prompts before anything is queued, a prompt search is a job of
the queue (progress from its child's events, cancel, the best prompt when it ends), and the Runs
tab shows a search's ranked prompts and a trained run's answer card with each clip's A/B
probability. Nothing is trained or searched here: runs are ingested as the writer would ingest
them, and the queue never starts a job (QueueOnly)."""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from conftest import copy_session
from core.config import load_preset
from core.run_folder import MANIFEST_FILE, METRICS_FILE, RESULT_FILE
from core.store import Store
from llm_support import build_llm_session
from pipelines.prompt_search import ingest_prompt_search, prepare_prompt_search
from pipelines.tiny_audio_llm import save_tiny_audio_llm
from test_train_form import form_of
from test_train_runs_handlers import QueueOnly
from workbench import runs_handlers, train_form, train_handlers, train_progress
from workbench.context import Workbench
from workbench.job_queue import Job, JobManager
from workbench.renderer import ClipViewCache

PRESET = "speech-llm-lora"
HUB_ID = "Qwen/Qwen2-Audio-7B-Instruct"  # the preset's base: never in the test machine's (empty) cache
PROMPT = "Listen: is someone talking?\nA) yes: a voice\nB) no"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(a closed 48-clip SPEECH / NONSPEECH session, a tiny random Qwen2-Audio folder)."""
    root = tmp_path_factory.mktemp("llm-handlers")
    return build_llm_session(root), save_tiny_audio_llm(root / "base")


@pytest.fixture
def wb(built, tmp_path, monkeypatch) -> Workbench:
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    store = Store.open(copy_session(built[0], tmp_path / "session"))
    yield Workbench(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store), jobs=QueueOnly(store))
    store.close()


def form(preset: str = PRESET, **changes) -> list:
    """The Train form of a preset as Gradio hands it to a handler, some fields changed (key__sub=value)."""
    scalars, *tables = form_of(load_preset(preset))
    scalars.update({key.replace("__", "."): value for key, value in changes.items()})
    return [*scalars.values(), *tables]


def with_base(base: Path, **changes) -> list:
    return form(model__pretrained=str(base), **changes)


# --- the form -------------------------------------------------------------------------------------------
def test_the_llm_fields_become_dotted_overrides_that_load_preset_reproduces(built):
    config = load_preset(PRESET)
    scalars, *tables = form_of(config)
    assert list(scalars)[-len(train_form.LLM_KEYS):] == list(train_form.LLM_KEYS)
    assert train_form.overrides_between(config, train_form.config_from_form(config, scalars, *tables)) == []
    changed = {**scalars, "model.pretrained": f"  {built[1]}  ", "model.lora.rank": 4, "model.lora.dropout": 0.0,
               "model.speech_llm.add_mlp_targets": True, "model.speech_llm.prompt_from_search": False,
               "model.speech_llm.speech_answer": "B", "model.speech_llm.generated_prompts": 0,
               "model.speech_llm.prompt": PROMPT}
    chosen = train_form.config_from_form(config, changed, *tables)
    overrides = train_form.overrides_between(config, chosen)
    assert overrides == [f'model.pretrained="{built[1]}"', "model.lora.rank=4", "model.lora.dropout=0.0",
                         "model.speech_llm.prompt=" + json.dumps(PROMPT), "model.speech_llm.speech_answer=\"B\"",
                         "model.speech_llm.prompt_from_search=false", "model.speech_llm.add_mlp_targets=true",
                         "model.speech_llm.generated_prompts=0"]
    assert load_preset(PRESET, overrides) == chosen
    assert chosen.model.speech_llm.prompt == PROMPT  # a prompt with colons stays text, never read as YAML
    assert train_form.config_from_form(config, {**scalars, "model.pretrained": " "}, *tables).model.pretrained is None


def test_every_llm_field_carries_its_help_and_other_presets_hide_them(wb):
    from core.config import ExperimentConfig
    help_text = ExperimentConfig.field_help()
    assert all(help_text[key] for key in train_form.LLM_KEYS)  # the tab shows these as the fields' info
    box, search, *_ = train_handlers.llm_view(wb, "demo-fast", False, "", *form("demo-fast"))
    assert box.visible is False and search.visible is False
    box, search, base, note = train_handlers.llm_view(wb, PRESET, False, "", *form())
    assert box.visible is True and search.visible is True
    assert base.startswith('<div class="em-message-error">base: model.pretrained: ')


def test_a_base_that_cannot_be_read_here_is_named_in_the_form_and_refused_before_anything_is_queued(wb):
    missing = (f"model.pretrained: '{HUB_ID}' is not a local folder and is not in the local Hugging Face cache; "
               f"Earmark downloads no base model: download it first (hf download {HUB_ID}) or point "
               "model.pretrained at a folder written by save_pretrained")
    _, message, _ = train_handlers.preview(PRESET, False, "", *form(), session_dir=wb.store.session_dir)
    assert message == f'<span class="em-message-error">{html.escape(missing)}</span>'  # one line, no traceback
    runs_before = len(wb.store.runs())
    for start in (lambda: train_handlers.start_job(wb, None, "ana", PRESET, "none", False, "", *form()),
                  lambda: train_handlers.start_prompt_search(wb, None, "ana", PRESET, False, "", *form())):
        with pytest.warns(UserWarning, match=re.escape(f"Not started: {missing}")):
            shown, message = start()
        assert shown == gr.skip()
        assert message == f'<span class="em-message-error">Not started: {html.escape(missing)}</span>'
    assert wb.jobs.jobs() == [] and len(wb.store.runs()) == runs_before
    # A folder that is not a model, and one that is another kind of model, are named the same way.
    _, message, _ = train_handlers.preview(PRESET, False, "", *form(model__pretrained=str(wb.session_dir)),
                                           session_dir=wb.store.session_dir)
    assert f"model.pretrained: folder &#x27;{wb.session_dir}&#x27; holds no readable transformers config" in message


def test_a_readable_base_passes_and_the_form_says_which_prompt_a_fine_tune_asks_with(wb, built):
    _, message, _ = train_handlers.preview(PRESET, False, "", *with_base(built[1]), session_dir=wb.store.session_dir)
    assert message == f'<span class="em-message-ok">changed from the preset: model.pretrained=&quot;{built[1]}&quot;</span>'
    _, _, base, note = train_handlers.llm_view(wb, PRESET, False, "", *with_base(built[1]))
    assert base.startswith(f'<div class="em-message-ok">base: Qwen2-Audio at {built[1]}: language model 2 layers')
    assert "No prompt search of this base model yet: a fine-tune asks with the prompt below" in note
    off = train_handlers.llm_view(wb, PRESET, False, "", *with_base(built[1], model__speech_llm__prompt_from_search=False))
    assert off[3] == "<div>A fine-tune asks with the prompt below (prompt_from_search is off).</div>"
    search_id = searched(wb, built[1])
    note = train_handlers.llm_view(wb, PRESET, False, "", *with_base(built[1]))[3]
    assert (f"A fine-tune asks with the best prompt of prompt search {search_id} (hand:2, A = speech, dev balanced "
            f"accuracy 75.0%) in place of the prompt below:<pre class=\"em-prompt\">") in note
    assert "Listen: is someone talking?\nA) yes: a voice" in note


def test_a_hub_id_in_the_local_cache_is_read_from_there(wb, built, tmp_path):
    snapshot = tmp_path / "hub" / "models--tiny--qwen2-audio" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((built[1] / "config.json").read_text())
    (tmp_path / "hub" / "models--tiny--qwen2-audio" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--qwen2-audio" / "refs" / "main").write_text("abc123")
    _, _, base, _ = train_handlers.llm_view(wb, PRESET, False, "", *form(model__pretrained="tiny/qwen2-audio"))
    assert base.startswith('<div class="em-message-ok">base: Qwen2-Audio at tiny/qwen2-audio: '), base


# --- the job ------------------------------------------------------------------------------------------
def test_search_prompts_queues_a_job_that_can_be_cancelled(wb, built):
    shown, message = train_handlers.start_prompt_search(wb, None, "ana", PRESET, False, "",
                                                        *with_base(built[1], model__speech_llm__generated_prompts=0))
    run_id = re.search(r"prompt search (\S+) queued\. ", message).group(1)
    assert shown is None and message.endswith("it scores the base model alone, on the val clips.</span>")
    assert wb.store.run(run_id)["kind"] == "prompt_search" and wb.store.run(run_id)["status"] == "queued"
    table = train_progress.jobs_frame(wb)
    assert table.job.tolist() == ["prompt-search"] and table.state.tolist() == ["queued #1"]
    assert table["changed settings"].iloc[0] == f'model.pretrained="{built[1]}", model.speech_llm.generated_prompts=0'
    progress = train_handlers.refresh(wb, None, -1, None, panel_size=11)[0]
    assert f"<b>prompt search {run_id}</b> &middot; {PRESET} &middot; started by ana" in progress
    with pytest.raises(ValueError, match="Enter your name"):
        train_handlers.start_prompt_search(wb, None, " ", PRESET, False, "", *with_base(built[1]))
    assert train_handlers.cancel_job(wb, None)[0] == run_id
    assert wb.store.run(run_id)["status"] == "cancelled" and wb.jobs.snapshot(run_id).status == "cancelled"


def test_the_progress_counts_prompts_and_answers_and_a_finished_search_names_its_best_prompt():
    job = Job(run_id="s1", run_dir=Path("."), preset=PRESET, overrides=[], submitted_by="ana", frozen_at_decision=3,
              submitted_at=0.0, status="running", phase="searching", kind="prompt-search", search_total=72,
              prompts=6, search_done=20, candidate="hand:2")
    assert job.prompt_number() == 2 and job.fraction_done() == pytest.approx(0.95 * 20 / 72)
    html = train_progress.progress_html(job)
    assert "scoring prompts on the val clips &middot; prompt 2 of 6 (hand:2) &middot; 20 / 72 clip answers scored" in html
    job.status, job.phase = "succeeded", "done"
    job.result = {"best": {"text": "Speech?\nA) yes\nB) no", "speech_answer": "A", "origin": "hand:2",
                           "balanced_accuracy": 0.75, "clips": 12},
                  "final": {"threshold": 0.4, "test_balanced_accuracy": 0.6667, "test_clips": 12}}
    html = train_progress.progress_html(job)
    assert ("Best prompt (hand:2, A = speech): <b>dev balanced accuracy 75.0%</b> on 12 val clips; test balanced "
            "accuracy 66.7% on 12 test clips at the dev threshold 0.400.") in html
    assert '<pre class="em-prompt">Speech?\nA) yes\nB) no</pre>' in html


def test_a_search_that_finished_while_no_server_ran_is_ingested_by_the_next(wb, built):
    run_id, run_dir = prepare_prompt_search(wb.store, preset=PRESET, overrides=[f"model.pretrained={built[1]}"])
    wb.store.set_run_status(run_id, "running")
    (run_dir / RESULT_FILE).write_text(json.dumps(SEARCH_RESULT))
    JobManager(wb.store)  # a server starting on the session
    run = wb.store.run(run_id)
    assert run["status"] == "succeeded" and run["summary"]["best"]["origin"] == "hand:2"


@pytest.mark.slow
def test_a_running_search_stops_within_a_batch_when_cancelled(built, tmp_path):
    """A real prompt-search child on the tiny base: cancelled while it scores, it stops, and the
    job, its log and the store all say so."""
    with Store.open(copy_session(built[0], tmp_path / "session")) as store:
        manager = JobManager(store)
        job = manager.submit_prompt_search(preset=PRESET, overrides=[f"model.pretrained={built[1]}"], submitted_by="ana")
        deadline = time.monotonic() + 120
        while manager.snapshot(job.run_id).search_done == 0:
            assert time.monotonic() < deadline, "the search never started scoring"
            time.sleep(0.1)
        running = manager.snapshot(job.run_id)
        assert running.phase == "searching" and running.prompts == 29  # 5 prompts, 4 rephrasings of each, 4 proposals
        manager.cancel(job.run_id)
        done = manager.wait(job.run_id, timeout_s=60)
        assert done.status == "cancelled" and done.error.startswith("cancelled while scoring prompt hand:")
        assert "cancel requested: the search stops after its current batch of clips" in done.log
        assert store.run(job.run_id)["status"] == "cancelled" and not (job.run_dir / "prompts.md").exists()
        manager.shutdown()


# --- the Runs tab ---------------------------------------------------------------------------------------
def searched(wb: Workbench, base: Path) -> str:
    """A succeeded prompt search of base, ingested as the writer ingests its child's result (the
    table and the result written as its child would); its id."""
    run_id, run_dir = prepare_prompt_search(wb.store, preset=PRESET, overrides=[f"model.pretrained={base}"])
    rows = [("hand:2", PROMPT, 0.75), ("hand:1", "Choose one:\nA) SPEECH\nB) NONSPEECH", 0.5)]
    (run_dir / "prompts.md").write_text(
        "# Prompt search (B8)\n\n2 prompts scored on the dev clips, best first.\n\n| rank | origin | bal. acc | prompt |\n"
        "|---:|---|---:|---|\n" + "".join(f"| {i + 1} | {origin} | {score:.1%} | {json.dumps(text)[1:-1]} |\n"
                                        for i, (origin, text, score) in enumerate(rows)))
    ingest_prompt_search(wb.store, run_id, SEARCH_RESULT)
    return run_id


SEARCH_RESULT = {"status": "succeeded", "candidates": 2, "rejected": 0,
                 "best": {"text": PROMPT, "speech_answer": "A", "origin": "hand:2", "balanced_accuracy": 0.75,
                          "accuracy": 0.75, "confidence_gap": 0.1, "outside_ab": None, "clips": 12},
                 "final": {"threshold": 0.4, "test_accuracy": 0.7, "test_balanced_accuracy": 2 / 3, "test_clips": 12}}


def test_a_prompt_search_run_shows_its_best_prompt_and_ranked_table_in_place_of_plots(wb, built):
    run_id = searched(wb, built[1])
    column, markdown, predictions, player = runs_handlers.llm_view(wb, run_id, "test")
    assert column.visible is True and predictions.visible is False and player == ""
    assert markdown.startswith("### Best prompt (hand:2, A = speech)\n\nDev balanced accuracy **75.0%** on 12 val "
                               "clips; test balanced accuracy **66.7%** on 12 clips at the dev threshold p(speech) >= 0.400.")
    assert f"```text\n{PROMPT}\n```" in markdown
    assert "### Ranked prompts" in markdown and "| 1 | hand:2 | 75.0% | Listen: is someone talking?<br>A) yes: a voice<br>B) no |" in markdown
    _, split_column, report_column, *_ = runs_handlers.report_view(wb, run_id)
    assert split_column.visible is False and report_column.visible is False  # no plots to show


def test_an_llm_training_run_shows_its_answer_card_and_each_clips_ab_probability(wb, built):
    run_id, p_speech = llm_run(wb, built[1])
    column, markdown, predictions, _ = runs_handlers.llm_view(wb, run_id, "test")
    assert column.visible is True and predictions.visible is True
    assert markdown.startswith(f"### Answer card (audio LLM)\n\n- **base model**: `{built[1]}`")
    assert "- **letters**: A = SPEECH, B = not SPEECH; token ids A 32, B 33" in markdown
    assert "- **threshold**: p(A) >= 0.400 means SPEECH (chosen on val for balanced accuracy)" in markdown
    frame = predictions.value
    assert frame["headers"] == ["clip", "label", "predicted", "p(A) = p(SPEECH)", "at threshold 0.400"]
    rows = pd.DataFrame(frame["data"], columns=frame["headers"])
    state = wb.store.labels()
    test = state[state.split == "test"]
    assert sorted(rows["clip"]) == sorted(test.clip_id) and rows.label.tolist() == [dict(zip(test.clip_id, test.label))[c]
                                                                                  for c in rows["clip"]]
    assert rows["p(A) = p(SPEECH)"].tolist() == [round(p_speech[c], 3) for c in rows["clip"]]
    p_label = [p if label == "SPEECH" else 1 - p for p, label in zip(rows["p(A) = p(SPEECH)"], rows.label)]
    assert p_label == sorted(p_label)  # most confidently wrong first
    assert rows["at threshold 0.400"].tolist() == ["SPEECH" if p >= 0.4 else "NONSPEECH" for p in rows["p(A) = p(SPEECH)"]]
    first = rows.iloc[0]
    player = runs_handlers.play_llm_clip(wb, run_id, first.tolist())
    assert player.startswith(f"<div style='margin-bottom:4px'>clip {first['clip']}: label {first.label}; the model "
                             f"says {first.predicted}, p(speech) {first['p(A) = p(SPEECH)']:.3f} from its A/B letters")
    assert "<audio" in player
    # A CNN run, or no run, hides the column.
    assert runs_handlers.llm_view(wb, None, "test")[0].visible is False


def llm_run(wb: Workbench, base: Path) -> tuple[str, dict[int, float]]:
    """A succeeded audio-LLM training run as the writer ingests it: metrics.json with its answer
    card, and predictions of p(speech) spread over the clips; its id and p(speech) per clip."""
    run_id = "20260103-000000-train-llm"
    run_dir = Path(wb.store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    config = load_preset(PRESET, [f"model.pretrained={base}"])
    wb.store.create_run(run_id, kind="train", preset=PRESET, config=config.to_dict(), parent_run_id=None,
                        manifest_decision_id=wb.store.last_decision_id(), run_dir=run_dir)
    clips = wb.store.labels()
    labels = ["NONSPEECH", "SPEECH"]
    p_speech = dict(zip(clips.clip_id, np.linspace(0.05, 0.95, len(clips)).round(4)))
    card = {"base": str(base), "prompt": PROMPT, "speech_answer": "A", "answer_token_ids": {"A": 32, "B": 33},
            "speech_label": "SPEECH", "threshold": 0.4, "threshold_objective": "balanced_accuracy"}
    (run_dir / METRICS_FILE).write_text(json.dumps({"labels": labels, "answer_card": card}))
    clips[["clip_id", "label", "split"]].to_parquet(run_dir / MANIFEST_FILE)  # the labels it was trained on
    probs = [[1 - p_speech[c], p_speech[c]] for c in clips.clip_id]
    wb.store.ingest_run_results(run_id, predictions=pd.DataFrame({
        "clip_id": clips.clip_id, "split": clips.split, "label": clips.label,
        "predicted": [labels[int(p[1] >= 0.5)] for p in probs], "confidence": [max(p) for p in probs], "probs": probs}))
    wb.store.set_run_status(run_id, "succeeded")
    return run_id, p_speech
