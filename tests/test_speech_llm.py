"""The audio LLM speech detector (B1, B8) with a tiny random Qwen2-Audio saved to a temp folder
and loaded through from_pretrained: constrained A/B scoring, loss masking, LoRA, adapter-only
checkpoints, prompt search, and the fine-tune -> audit -> comparison -> gates flow of a session."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import copy_session
from core.checkpoint import checkpoint_dir, load_checkpoint
from core.config import ConfigError, FeatureConfig, ModelConfig, load_preset
from core.models import build_model
from core.models.speech_llm import IGNORE_INDEX, Prompt, answer_labels, check_base, masked_lm_loss
from core.prompt_search import Candidate, free_letter, parse_proposal, score_candidate, swap_options, template_variants
from core.prompt_search_child import p_speech_of
from core.store import Store
from llm_support import build_llm_session, fast_overrides
from pipelines import finetune as ft
from pipelines.detector_comparison import compare_detectors, trained_name
from pipelines.finetune_audit_gates import audit_then_gates
from pipelines.promotion import promote
from pipelines.prompt_search import prompt_search
from pipelines.tiny_audio_llm import save_tiny_audio_llm

LABELS = ["NONSPEECH", "SPEECH"]
# Fastest learning: the preset's prompt, no background noise.
LEARN = ["augment=[]", "model.speech_llm.prompt_from_search=false"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_audio_llm(tmp_path_factory.mktemp("tiny-qwen2-audio") / "model")


@pytest.fixture(scope="module")
def llm_session(tmp_path_factory) -> Path:
    return build_llm_session(tmp_path_factory.mktemp("llm-session"))


def _model(base: Path, **speech_llm) -> torch.nn.Module:
    cfg = ModelConfig.from_dict({"name": "speech_llm", "pretrained": str(base), "speech_llm": speech_llm,
                                 "lora": {"enabled": True, "rank": 4, "alpha": 8, "dropout": 0.0,
                                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}})
    return build_model(cfg, feature_cfg=FeatureConfig(front_end="waveform", normalize=False, max_length_s=0.5),
                       labels=LABELS)


def _waves(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 0.1, (n, 1, 8000)).astype(np.float32))


# --- the model -----------------------------------------------------------------------------------

def test_scores_are_the_softmax_of_the_answer_letters_at_the_assistant_position(base):
    model = _model(base).eval()
    waves = _waves(3)
    with torch.no_grad():
        logits = model(waves)
        inputs = model.prompt_inputs(waves)
        full = model.network.get_base_model()(**inputs).logits[:, -1]  # transformers' own forward, all of the vocabulary
    ids = model.letter_ids
    assert logits.shape == (3, 2) and set(ids) == {"A", "B"}
    assert [model.processor.tokenizer.decode([ids[k]]) for k in "AB"] == ["A", "B"]
    # Column order is the label order: SPEECH (column 1) is the letter A of the default prompt.
    torch.testing.assert_close(logits, full[:, [ids["B"], ids["A"]]], atol=1e-4, rtol=1e-4)
    # Every row holds as many audio placeholders as the encoder makes of its features.
    assert int((inputs["input_ids"] == model.processor.audio_token_id).sum()) == 3 * 12


def test_swapping_the_options_swaps_which_letter_scores_speech(base):
    model = _model(base).eval()
    waves = _waves(2)
    plain = p_speech_of(model, waves, Prompt("Speech? A) yes B) no", "A"))
    # Same question and letters, but B now means speech: p(speech) becomes the other letter's share.
    swapped = p_speech_of(model, waves, Prompt("Speech? A) yes B) no", "B"))
    np.testing.assert_allclose(plain, 1 - swapped, atol=1e-5)
    assert model.prompt.speech_answer == "A"  # scoring another prompt leaves the model's own in place


def test_the_loss_counts_only_the_answer_token(base):
    model = _model(base).eval()
    waves, targets = _waves(2), torch.tensor([1, 0])
    inputs = model.prompt_inputs(waves)
    answers = torch.tensor([[model.letter_ids["A"]], [model.letter_ids["B"]]])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answers], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answers)], dim=1)
    labels = answer_labels(inputs["input_ids"], answer_tokens=1)
    assert (labels[:, :-1] == IGNORE_INDEX).all() and torch.equal(labels[:, -1], answers[:, 0])
    with torch.no_grad():
        hidden = model.network.get_base_model().model(**inputs).last_hidden_state
        ours = masked_lm_loss(hidden, labels, lm_head=model.network.get_base_model().lm_head)
        theirs = model.network.get_base_model()(**inputs, labels=labels).loss  # transformers' labels= loss
        own = model(waves, answer_targets=targets)
        # Whatever the prompt positions would be trained to predict, the mask leaves them out.
        scrambled = answer_labels(torch.randint_like(inputs["input_ids"], 0, 200).index_copy(
            1, torch.tensor([inputs["input_ids"].shape[1] - 1]), answers), answer_tokens=1)
        unchanged = masked_lm_loss(hidden, scrambled, lm_head=model.network.get_base_model().lm_head)
        other = model(waves, answer_targets=1 - targets)
        eot = model.answer_loss(waves, targets, end_of_turn=True)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.full_like(answers, model._end_of_turn_id())], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answers)], dim=1)
        with_eot = model.network.get_base_model()(**inputs, labels=answer_labels(inputs["input_ids"], answer_tokens=2)).loss
    torch.testing.assert_close(eot, with_eot, atol=1e-4, rtol=1e-4)  # the option counts the end-of-turn token too
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(own, ours, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(unchanged, ours)
    assert not torch.isclose(other, own)  # the answer itself does count


def test_only_adapters_and_the_chosen_projector_receive_gradients(base):
    model = _model(base, add_mlp_targets=True, train_projector=True).train()
    model(_waves(2), answer_targets=torch.tensor([0, 1])).backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert with_grad and with_grad <= trainable
    assert all("lora_" in name or "multi_modal_projector.modules_to_save" in name for name in trainable)
    assert any("mlp.down_proj.lora_A" in name for name in trainable)  # the plan's --add_mlp_targets
    assert not any("audio_tower" in name for name in trainable)        # the encoder stays frozen


def test_free_answers_and_proposals_are_judged_by_their_letters():
    assert [free_letter(a) for a in ("A", "b.", "A) SPEECH", "Answer: A", "Absolutely", "")] == ["A", "B", "A", None, None, None]
    scores = score_candidate(p_speech=np.array([0.9, 0.8, 0.3, 0.6]), is_speech=np.array([True, True, False, False]),
                             free_answers=["A", "A", "banana", "B"])
    assert scores["accuracy"] == 0.75 and scores["balanced_accuracy"] == 0.75 and scores["outside_ab"] == 0.25
    assert scores["confidence_gap"] == pytest.approx(np.mean([0.9, 0.8, 0.7]) - 0.6)
    assert parse_proposal("no options here")[0] is None and parse_proposal("")[1] == "empty"
    assert parse_proposal("Listen.\nA) speech\nB) no speech\nLetter:")[0].speech_answer == "A"


def test_template_variants_swap_options_and_the_speech_letter():
    hand = Candidate("Is there speech?\nA) Yes\nB) No\nAnswer:", "A", "hand:1")
    assert swap_options(hand.text) == "Is there speech?\nA) No\nB) Yes\nAnswer:"
    variants = template_variants(hand)
    assert [v.origin for v in variants] == ["template:swapped(hand:1)", "template:reply(hand:1)",
                                            "template:task(hand:1)", "template:question(hand:1)"]
    assert variants[0].speech_answer == "B" and all(v.speech_answer == "A" for v in variants[1:])
    assert swap_options("A) only one option") is None


# --- bad input -------------------------------------------------------------------------------------

def test_a_missing_or_wrong_base_model_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even online, nothing is downloaded
    with pytest.raises(ValueError, match="'Qwen/not-here' is not a local folder .* downloads no base model") as missing:
        check_base("Qwen/not-here")
    assert "\n" not in str(missing.value)
    with pytest.raises(ValueError, match="holds no readable transformers config"):
        check_base(str(tmp_path))
    with pytest.raises(ValueError, match="needs its base model"):
        check_base(None)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "audio-spectrogram-transformer"}))
    with pytest.raises(ValueError, match="is a 'audio-spectrogram-transformer' model, not Qwen2-Audio"):
        check_base(str(tmp_path))


def test_refusals_create_no_run(llm_session, base, tmp_path):
    session = copy_session(llm_session, tmp_path / "session")
    with Store.open(session) as store:
        with pytest.raises(ConfigError, match="not a local folder"):
            ft.finetune(store, preset="speech-llm-lora", init_from="none", progress=False)
        with pytest.raises(ConfigError, match="prompt search is for the audio LLM"):
            prompt_search(store, preset="speech-cnn", progress=False)
        with pytest.raises(ConfigError, match="spec_augment works on log-mel features"):
            ft.finetune(store, preset="speech-llm-lora", init_from="none", progress=False,
                        overrides=[*fast_overrides(base), "augment=[{name: spec_augment}]"])
        assert store.runs().empty
    assert not (session / "runs").exists() or not any((session / "runs").iterdir())
    with pytest.raises(ConfigError, match="features.normalize: must be false with front_end waveform"):
        load_preset("speech-llm-lora", ["features.normalize=true"])


# --- in a session ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searched(llm_session, base, tmp_path_factory) -> tuple[Path, object]:
    session = copy_session(llm_session, tmp_path_factory.mktemp("searched") / "session")
    with Store.open(session) as store:
        outcome = prompt_search(store, overrides=fast_overrides(base), progress=False)
    return session, outcome


def test_prompt_search_scores_every_candidate_and_keeps_the_best(searched):
    session, outcome = searched
    assert outcome.status == "succeeded", outcome.error
    table = json.loads((outcome.run_dir / "prompts.json").read_text())
    rows = table["candidates"]
    origins = [row["origin"] for row in rows]
    # Plan B's five, four template variants of each, and the model's one proposal (a random model
    # writes no usable prompt: it is listed with why).
    assert len(rows) == 25 and sum(o.startswith("hand:") for o in origins) == 5 and len(table["rejected"]) == 1
    assert all(row["clips"] == 12 and row["outside_ab"] is not None for row in rows)
    keys = [(-r["balanced_accuracy"], -(r["confidence_gap"] if r["confidence_gap"] is not None else -1), -r["accuracy"])
            for r in rows]
    assert keys == sorted(keys) and [r["rank"] for r in rows] == list(range(1, 26))
    best = outcome.summary["best"]
    assert best["text"] == rows[0]["text"] and outcome.summary["final"]["test_clips"] == 12
    assert "| rank | origin |" in (outcome.run_dir / "prompts.md").read_text()
    assert pd.read_csv(outcome.run_dir / "prompts.csv").shape[0] == 25
    with Store.open(session) as store:
        metrics = store.run_metrics(outcome.run_id)
    assert {"balanced_accuracy", "threshold"} <= set(metrics[metrics.split == "val"].name)


def test_a_fine_tune_asks_with_the_searched_prompt(searched, base, tmp_path):
    session = copy_session(searched[0], tmp_path / "session")
    best = searched[1].summary["best"]
    with Store.open(session) as store:
        prepared = ft.prepare_finetune(store, preset="speech-llm-lora", overrides=fast_overrides(base), init_from="none")
    assert prepared.config.model.speech_llm.prompt == best["text"]
    assert prepared.config.model.speech_llm.speech_answer == best["speech_answer"]
    assert searched[1].run_id in prepared.start_line()


@dataclasses.dataclass
class Trained:
    session: Path
    run_id: str
    cancelled: dict        # the ingested result of the run cancelled after its first epoch
    resume_point: list     # tensor names in its resume point then
    resumed: dict          # the result of resuming it to the end
    untouched: bool        # the session's clips and decisions after all that are as before


@pytest.fixture(scope="module")
def trained(llm_session, base, tmp_path_factory) -> Trained:
    """One LoRA fine-tune of the tiny base, cancelled after its first epoch and resumed to the end
    (the way a person stops a long run and continues it later)."""
    session = copy_session(llm_session, tmp_path_factory.mktemp("llm-trained") / "session")
    with Store.open(session) as store:
        clips, decisions = store.clips(), store.decisions()
        prepared = ft.prepare_finetune(store, preset="speech-llm-lora", overrides=[*fast_overrides(base), *LEARN],
                                       init_from="none")
        process = ft.launch(prepared.run_dir, module="core.train")

        def on_event(event):
            if event["type"] == "epoch":
                ft.cancel(prepared.run_dir, process)

        cancelled = ft.ingest(store, prepared.run_id, exit_code=ft.follow(prepared.run_dir, process, on_event=on_event))
        resume_point = list(load_file(str(prepared.run_dir / "state" / "model.safetensors")))
        resumed = ft.resume(store, prepared.run_id, progress=False).result
        untouched = store.clips().equals(clips) and store.decisions().equals(decisions)
    return Trained(session, prepared.run_id, cancelled, resume_point, resumed, untouched)


def test_a_cancelled_run_resumes_from_its_adapters_and_the_session_is_untouched(trained):
    assert trained.cancelled["status"] == "cancelled" and trained.cancelled["epochs_run"] == 1
    # The resume point keeps the adapters, never the frozen base.
    assert trained.resume_point and all("lora_" in name for name in trained.resume_point)
    assert trained.resumed["status"] == "succeeded" and trained.resumed["epochs_run"] == 5, trained.resumed
    assert trained.untouched


def test_fine_tuning_raises_dev_balanced_accuracy(trained, base):
    session, run_id = trained.session, trained.run_id
    run_dir = session / "runs" / run_id
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    # The same base, before any step, on the same val clips.
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    val = manifest[manifest.split == "val"]
    import soundfile as sf
    waves = torch.from_numpy(np.stack([sf.read(p, dtype="float32")[0][:8000] for p in val.path]))[:, None]
    before = p_speech_of(_model(base).eval(), waves, Prompt(load_preset("speech-llm-lora").model.speech_llm.prompt))
    said = before >= 0.5
    truth = (val.label == "SPEECH").to_numpy()
    untrained = np.mean([(said[truth == v] == v).mean() for v in (True, False)])
    best = max(row["val_balanced_accuracy"] for row in history)
    assert best >= 0.75 and best > untrained + 0.2, (untrained, [row["val_balanced_accuracy"] for row in history])


def test_the_checkpoint_holds_adapters_and_its_card_and_reloads_to_the_same_scores(trained):
    session, run_id = trained.session, trained.run_id
    run_dir = session / "runs" / run_id
    folder = checkpoint_dir(run_dir)
    saved = load_file(str(folder / "model.safetensors"))
    assert saved and all("lora_" in name for name in saved)  # adapters only: the base is named, not copied
    card = json.loads((folder / "config.json").read_text())["extra"]["answer_card"]
    assert card["base"].endswith("model") and card["speech_answer"] == "A" and set(card["answer_token_ids"]) == {"A", "B"}
    assert 0 < card["threshold"] < 1 and "Choose one:" in card["prompt"]
    assert "Audio LLM answer card" in (folder / "README.md").read_text()
    loaded = load_checkpoint(folder)
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    import soundfile as sf
    waves = torch.from_numpy(np.stack([sf.read(p, dtype="float32")[0][:8000] for p in manifest.path[:8]]))[:, None]
    with torch.no_grad():
        again = torch.softmax(loaded.model(waves.half().float()), dim=-1).numpy()
    np.testing.assert_allclose(again, np.stack(predictions.probs[:8]), atol=2e-3)


def test_a_crashing_run_is_recorded_and_leaves_the_session_untouched(llm_session, base, tmp_path):
    session = copy_session(llm_session, tmp_path / "session")
    with Store.open(session) as store:
        clips, decisions = store.clips(), store.decisions()
        crashed = ft.prepare_finetune(store, preset="speech-llm-lora", overrides=fast_overrides(base), init_from="none")
        # The base moved away between the click and the child's start: the child cannot load it.
        (crashed.run_dir / "config.yaml").write_text(
            (crashed.run_dir / "config.yaml").read_text().replace(str(base), str(tmp_path / "moved")))
        process = ft.launch(crashed.run_dir, module="core.train")
        failed = ft.ingest(store, crashed.run_id, exit_code=ft.follow(crashed.run_dir, process, on_event=lambda e: None))
        assert failed["status"] == "failed" and "moved" in failed["error"] and "\n" not in failed["error"]
        assert store.run(crashed.run_id)["status"] == "failed"
        pd.testing.assert_frame_equal(store.clips(), clips)
        pd.testing.assert_frame_equal(store.decisions(), decisions)
        assert store.production_run() is None and store.predictions(crashed.run_id).empty


def test_the_run_is_audited_compared_with_a_vad_and_promoted_through_the_gates(trained, tmp_path):
    session = copy_session(trained.session, tmp_path / "session")
    run_id = trained.run_id
    with Store.open(session) as store:
        audited = audit_then_gates(store, run_id=run_id)
        assert audited.status == "succeeded", audited.error
        compared = compare_detectors(store, runs=[run_id], progress=False, detectors=["webrtc-3"], bootstrap_draws=20)
        assert compared.status == "succeeded", compared.error
        assert list(compared.summary["detectors"]) == [trained_name(run_id), "webrtc-3"]
        outcome = promote(store, run_id=run_id, actor="tester", override=True, reason="tiny model, flow check")
        assert outcome.promoted and store.production_run() == run_id


def test_the_cli_refuses_a_missing_base_in_one_line(llm_session, tmp_path, capsys):
    import app
    session = copy_session(llm_session, tmp_path / "session")
    code = app.main(["prompt-search", "--session", str(session), "--set", f"model.pretrained={tmp_path / 'nowhere'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("earmark: error: model.pretrained:") and err.count("\n") == 1, err
    assert "nowhere" in err and not (session / "runs").exists()
