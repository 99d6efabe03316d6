"""Fine-tune runs end to end: real audio, a real session, the trainer as a real child process."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_wav
from core import review
from core.checkpoint import load_checkpoint, save_checkpoint
from core.config import ConfigError, ExperimentConfig, FeatureConfig, ModelConfig
from core.models import build_model
from core.store import Store
from core.train import CHECKPOINT_DIR
from pipelines import audit as audit_pipeline
from pipelines import finetune as ft
from pipelines.importing import import_dataset

REPO = Path(__file__).resolve().parent.parent
CLASSES = {"alert_sounds": 700.0, "emergency_sirens": 1200.0, "road_traffic": 150.0}
# Small and fast: 1 s clips, a small CNN.
FAST = ["features.max_length_s=1.0", "features.n_mels=32", "model.cnn_channels=[16, 32, 32, 32]",
        "train.batch_size=8", "train.epochs=4", "train.early_stopping_patience=0"]


def make_dataset(root: Path, *, per_class: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    for label, freq in CLASSES.items():
        for i in range(per_class):
            sweep = 0.04 * freq * np.sin(2 * np.pi * (0.5 + i % 3) * t) if label == "emergency_sirens" else 0
            wave = 0.3 * np.sin(2 * np.pi * (freq * (1 + 0.03 * rng.standard_normal()) * t + sweep / (2 * np.pi)))
            write_wav(root / label / f"rec{i // 2:02d}-{i}.wav", wave + 0.03 * rng.standard_normal(t.size))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture
def session(tmp_path, dataset):
    with Store.open(tmp_path / "session") as store:
        import_dataset(store, dataset, group_pattern=r"^(rec\d+)-", progress=False)
        yield store


def test_finetune_trains_evaluates_and_ingests_everything(session):
    a_clip = int(session.labels().query("split == 'train'").clip_id.iloc[0])
    excluded = session.record_decision(a_clip, annotator="ann", action="exclude", set_excluded=True)
    held_train, held_test = (int(session.labels().query(f"split == '{s}'").clip_id.iloc[1]) for s in ("train", "test"))
    for clip in (held_train, held_test):
        review.send_to_quarantine(session, clip, reason="sounds odd", annotator="ann")
    excluded = session.last_decision_id()
    outcome = ft.finetune(session, preset="demo-fast", overrides=FAST, progress=False)

    assert outcome.status == "succeeded", outcome.result
    assert outcome.result["accuracy"]["val"] >= 0.9
    run = session.run(outcome.run_id)
    assert run["status"] == "succeeded" and run["manifest_decision_id"] == excluded
    manifest = pd.read_parquet(outcome.run_dir / "manifest.parquet")
    assert a_clip not in set(manifest.clip_id)  # excluded clips never reach training
    assert held_train not in set(manifest.clip_id)  # nor do quarantined ones; held-out ones are scored as labelled
    assert manifest.set_index("clip_id").quarantined.to_dict()[held_test] and manifest.quarantined.sum() == 1
    n_test = int((manifest.split == "test").sum())
    overall = session.run_metrics(outcome.run_id, split="test").query("class_label.isna()").set_index("name").value
    assert (overall["clips"], overall["quarantined"]) == (n_test, 1)
    assert overall["quarantined_share"] == pytest.approx(1 / n_test) and "unquarantined_accuracy" in overall
    support = session.run_metrics(outcome.run_id, split="test").query("name == 'support'").value.sum()
    assert support == n_test and outcome.result["accuracy_unquarantined"]["test"] is not None
    predictions = session.predictions(outcome.run_id)
    assert len(predictions) == len(manifest) and set(predictions.split) == {"train", "val", "test"}
    assert np.allclose([sum(p) for p in predictions.probs], 1.0, atol=1e-4)
    metrics = session.run_metrics(outcome.run_id, split="test")
    per_class = metrics[metrics.class_label.notna()]
    assert set(per_class.class_label) == set(CLASSES)
    assert {"accuracy", "f1_macro", "f1_weighted", "mAP", "ece", "mce"} <= set(metrics.name)
    history = session.run_history(outcome.run_id)
    assert sorted(history.epoch.unique()) == [1.0, 2.0, 3.0, 4.0]
    for plot in ("confusion_test.png", "reliability_val.png", "training_curves.png"):
        assert (outcome.run_dir / "plots" / plot).stat().st_size > 5000
    checkpoint = load_checkpoint(outcome.run_dir / CHECKPOINT_DIR)
    assert checkpoint.labels == sorted(CLASSES) and checkpoint.extra["frozen_at_decision"] == excluded
    card = (outcome.run_dir / CHECKPOINT_DIR / "README.md").read_text()
    assert f"as of decision {excluded}" in card and "emergency_sirens" in card
    assert "accuracy without quarantined" in card and f"| 1 ({1 / n_test:.1%}) |" in card
    events = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    assert events[0]["type"] == "phase" and any(e["type"] == "step" and "eta_s" in e for e in events)


def test_run_metrics_break_down_by_clip_metadata(tmp_path, dataset):
    """A manifest's extra columns become breakdowns of every split (numbers match the predictions);
    answer-key columns never do."""
    rows = []
    for i, wav in enumerate(sorted(dataset.rglob("*.wav"))):
        rows.append({"path": wav.relative_to(dataset).as_posix(), "label": wav.parent.name, "group": wav.stem.split("-")[0],
                     "snr_db": [2.0, 8.0, 15.0, None][i % 4], "recorder": ["field", "studio"][i % 2],
                     "true_label": wav.parent.name, "label_error": False})
    pd.DataFrame(rows).to_csv(tmp_path / "with_metadata.csv", index=False)  # beside, not in, the shared dataset
    with Store.open(tmp_path / "session") as store:
        import_dataset(store, tmp_path / "with_metadata.csv", root=dataset, progress=False)
        outcome = ft.finetune(store, preset="demo-fast", overrides=FAST, progress=False)
        assert outcome.status == "succeeded", outcome.result
        stored = store.run_breakdowns(outcome.run_id, split="val")
        predictions = store.predictions(outcome.run_id)

    metrics = json.loads((outcome.run_dir / "metrics.json").read_text())
    assert set(metrics["breakdowns"]) == {"train", "val", "test"}
    val = metrics["breakdowns"]["val"]
    assert set(val) == {"snr_db", "recorder"}  # true_label and label_error are an answer key
    assert metrics["breakdowns_skipped"] == {"dataset": "every clip is in one group (with_metadata)",
                                             "duration_s": "every clip is in one group (1-3 s)"}
    assert list(val["snr_db"]["groups"]) == ["0-5 dB", "5-10 dB", "10-20 dB", "(none)"]
    assert val["snr_db"]["unit"] == "dB" and val["recorder"]["how"] == "values"

    manifest = pd.read_parquet(outcome.run_dir / "manifest.parquet")
    scored = predictions[predictions.split == "val"].merge(manifest[["clip_id", "meta.recorder", "meta.snr_db"]], on="clip_id")
    for recorder, clips in scored.groupby("meta.recorder"):
        group = val["recorder"]["groups"][recorder]
        assert group["n"] == len(clips) and group["accuracy"] == pytest.approx((clips.label == clips.predicted).mean())
    assert val["snr_db"]["groups"]["(none)"]["n"] == int(scored["meta.snr_db"].isna().sum())

    assert list(stored.group_name[stored.column_name == "snr_db"]) == list(val["snr_db"]["groups"])
    assert stored.set_index(["column_name", "group_name"]).n.to_dict()[("recorder", "field")] == val["recorder"]["groups"]["field"]["n"]
    assert (outcome.run_dir / "plots" / "breakdowns_test.png").stat().st_size > 5000
    assert "snr_db: 0-5 dB" in (outcome.run_dir / CHECKPOINT_DIR / "README.md").read_text()


def test_same_seed_same_data_same_metrics(session):
    first = ft.finetune(session, preset="demo-fast", overrides=FAST + ["train.epochs=2"], init_from="none", progress=False)
    second = ft.finetune(session, preset="demo-fast", overrides=FAST + ["train.epochs=2"], init_from="none", progress=False)
    a = session.run_history(first.run_id)
    b = session.run_history(second.run_id)
    pd.testing.assert_frame_equal(a[a.name != "lr"].reset_index(drop=True), b[b.name != "lr"].reset_index(drop=True))


def test_cancel_stops_cleanly_with_the_best_checkpoint_so_far(session):
    prepared = ft.prepare_finetune(session, preset="demo-fast", overrides=FAST + ["train.epochs=200"])
    process = ft.launch(prepared.run_dir, module="core.train")
    seen: list[str] = []

    def on_event(event):
        seen.append(event["type"])
        if event["type"] == "epoch" and event["epoch"] == 2:
            ft.cancel(prepared.run_dir, process)

    exit_code = ft.follow(prepared.run_dir, process, on_event=on_event)
    result = ft.ingest(session, prepared.run_id, exit_code=exit_code)
    assert result["status"] == "cancelled" and 2 <= result["epochs_run"] < 200
    assert "cancelled" in seen and seen[-1] == "cancelled"  # no evaluation after the cancel (issue 12 §5)
    assert result["evaluated"] is False and "audit the run to evaluate it" in result["message"]
    assert session.run(prepared.run_id)["status"] == "cancelled"
    load_checkpoint(prepared.run_dir / CHECKPOINT_DIR)  # consistent, loadable
    assert session.predictions(prepared.run_id).empty
    assert session.run_history(prepared.run_id).epoch.max() == result["epochs_run"]  # its curves are kept
    # Evaluating is the explicit action: an audit of the cancelled run scores its best checkpoint.
    audited = audit_pipeline.audit(session, run_id=prepared.run_id, progress=False)
    assert audited.status == "succeeded" and len(session.predictions(audited.run_id)) == len(prepared.manifest)


def test_a_crashing_job_is_recorded_and_leaves_the_session_intact(session):
    prepared = ft.prepare_finetune(session, preset="demo-fast", overrides=FAST)
    (prepared.run_dir / "manifest.parquet").write_text("not parquet")
    process = ft.launch(prepared.run_dir, module="core.train")
    result = ft.ingest(session, prepared.run_id, exit_code=ft.follow(prepared.run_dir, process, on_event=lambda e: None))
    assert result["status"] == "failed" and result["error"]
    assert session.run(prepared.run_id)["status"] == "failed"
    assert session.clip_count() == 3 * 24  # the session is untouched


def test_curriculum_composed_batches_and_hard_examples(session):
    labels = session.labels().query("split == 'train'")
    siren = int(labels[labels.label == "alert_sounds"].clip_id.iloc[0])
    session.record_decision(siren, annotator="ann", action="relabel", new_label="emergency_sirens")
    curriculum = ('train.curriculum=[{epochs: 1}, {epochs: 1, hard_examples: true, hard_repeat: 2, hard_fraction: 1.0, '
                  'hard_classes: [emergency_sirens]}, {epochs: 1, lr: 0.0001}]')
    overrides = FAST + ["train.batch_composition={emergency_sirens: 6, alert_sounds: 5, road_traffic: 5}", curriculum]
    outcome = ft.finetune(session, preset="demo-fast", overrides=overrides, progress=False)
    assert outcome.status == "succeeded", outcome.result
    manifest = pd.read_parquet(outcome.run_dir / "manifest.parquet").set_index("clip_id")
    assert bool(manifest.loc[siren, "hard"]) and manifest.hard.sum() == 1
    epochs = [json.loads(l) for l in (outcome.run_dir / "events.jsonl").read_text().splitlines() if '"epoch"' in l]
    epochs = [e for e in epochs if e["type"] == "epoch"]
    assert [e["stage"] for e in epochs] == [1, 2, 3]
    assert epochs[2]["lr"] < epochs[1]["lr"]  # stage 3's override lowers the rate


def test_finetune_from_a_previous_run_starts_from_its_weights(session):
    first = ft.finetune(session, preset="demo-fast", overrides=FAST, init_from="none", progress=False)
    second = ft.finetune(session, preset="demo-fast", overrides=FAST + ["train.epochs=1"], init_from=first.run_id, progress=False)
    assert second.status == "succeeded"
    assert session.run(second.run_id)["parent_run_id"] == first.run_id
    assert "initialised from" in (second.run_dir / "events.jsonl").read_text()
    # starting from a trained model, one epoch is already as good as the three before
    assert second.result["accuracy"]["val"] >= first.result["accuracy"]["val"] - 0.05


def test_bad_requests_are_refused_before_anything_runs(session):
    with pytest.raises(ConfigError, match="unknown preset"):
        ft.prepare_finetune(session, preset="no-such-preset")
    with pytest.raises(ConfigError, match=r"train.batch_composition: classes \['owls'\]"):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["train.batch_composition={owls: 3}"])
    with pytest.raises(ConfigError, match="neither a checkpoint folder nor a run id"):
        ft.prepare_finetune(session, preset="demo-fast", init_from="nope")
    with pytest.raises(ConfigError, match=r"mixup_p: 1.5 is out of range \[0, 1\]"):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["mixup_p=1.5"])
    with pytest.raises(ConfigError, match=r"mixup_alpha: -0.2 is out of range"):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["mixup_alpha=-0.2"])
    assert session.runs().empty


def test_a_relative_noise_bank_is_the_sessions_and_the_run_config_holds_it_absolute(session):
    bank = Path(session.session_dir) / "noise_bank"
    write_wav(bank / "noise" / "hum.wav", 0.1 * np.sin(2 * np.pi * 90 * np.arange(16000) / 16000))
    prepared = ft.prepare_finetune(session, preset="speech-cnn", init_from="none")
    frozen = ExperimentConfig.load(prepared.run_dir / "config.yaml")
    assert frozen.noise_bank == str(bank.resolve()) == prepared.config.noise_bank  # what the child and a resume read
    assert session.run(prepared.run_id)["config"]["noise_bank"] == str(bank.resolve())
    assert frozen.augment[0].name == "background_noise"


def test_a_missing_noise_bank_is_refused_in_one_line_before_any_run_exists(session):
    folder = Path(session.session_dir).resolve() / "noise_bank"
    with pytest.raises(ConfigError) as refused:
        ft.prepare_finetune(session, preset="speech-cnn", init_from="none")
    assert str(refused.value) == (f"noise_bank: {folder} is not a folder; put a noise bank in MUSAN layout there "
                                  "(music/, speech/, noise/), or --set noise_bank=/path/to/musan, or remove "
                                  "background_noise from augment")
    assert session.runs().empty and not (Path(session.session_dir) / "runs").exists()


def untrained_checkpoint(folder: Path, labels: list[str]) -> Path:
    """A start model narrower than demo-fast's, on other features (no training needed to check a start)."""
    model_cfg = ModelConfig(name="cnn", cnn_channels=[16, 32, 32, 32])
    features = FeatureConfig(n_mels=32, max_length_s=1.0)
    model = build_model(model_cfg, feature_cfg=features, labels=labels)
    return save_checkpoint(folder, model=model, model_cfg=model_cfg, feature_cfg=features, labels=labels, norm_stats={})


def test_a_fine_tune_inherits_the_architecture_and_features_of_its_start_model(session, tmp_path):
    folder = untrained_checkpoint(tmp_path / "start", sorted(CLASSES))
    prepared = ft.prepare_finetune(session, preset="demo-fast", overrides=["model.head_dropout=0.3"], init_from=str(folder))

    assert prepared.config.model.cnn_channels == [16, 32, 32, 32]
    assert (prepared.config.features.n_mels, prepared.config.features.max_length_s) == (32, 1.0)
    assert prepared.config.model.head_dropout == 0.3  # a regulariser, not architecture: the fine-tune's own
    # demo-fast leaves max_length_s and f_max_hz 'auto': they take the start model's values without a line
    assert (prepared.config.features.f_max_hz, prepared.config.features.max_length_s) == (None, 1.0)
    assert prepared.start_line() == (f"starts from checkpoint {folder} and keeps its architecture and features: "
                                     "model.cnn_channels [32, 64, 128, 128] -> [16, 32, 32, 32]; features.n_mels 64 -> 32")
    saved = ExperimentConfig.load(prepared.run_dir / "config.yaml")  # what the child will build
    assert saved.model.cnn_channels == [16, 32, 32, 32] and prepared.job.init_checkpoint == str(folder)
    assert session.run(prepared.run_id)["config"]["features"]["n_mels"] == 32

    same = ft.prepare_finetune(session, preset="demo-fast", init_from=str(folder),
                               overrides=["model.cnn_channels=[16, 32, 32, 32]", "features.n_mels=32"])
    assert same.start_line() == f"starts from checkpoint {folder}, whose architecture and features match the preset"
    scratch = ft.prepare_finetune(session, preset="demo-fast", init_from="none")
    assert scratch.config.model.cnn_channels == [32, 64, 128, 128] and scratch.start is None
    assert scratch.start_line() == "starts from scratch (the preset's own start)"


def test_a_start_model_of_another_architecture_is_refused_before_anything_runs(session, tmp_path):
    folder = untrained_checkpoint(tmp_path / "start", sorted(CLASSES))
    with pytest.raises(ConfigError, match=(r"this fine-tune sets model.cnn_channels=\[24, 48, 96, 128\], but checkpoint "
                                           r".+ was trained with model.cnn_channels=\[16, 32, 32, 32\]; a fine-tune keeps "
                                           r"the architecture .+ Leave model.cnn_channels unset")):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["model.cnn_channels=[24, 48, 96, 128]"],
                            init_from=str(folder))
    with pytest.raises(ConfigError, match=r"sets features.n_mels=64, but .+ was trained with features.n_mels=32"):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["features.n_mels=64"], init_from=str(folder))
    with pytest.raises(ConfigError, match=(r"preset 'ast-lms' builds model.name 'ast', but checkpoint .+ is model.name "
                                           r"'cnn', so its weights cannot start this fine-tune; start from scratch")):
        ft.prepare_finetune(session, preset="ast-lms", init_from=str(folder))
    with pytest.raises(ConfigError, match="preset 'demo-fast' builds model.name 'ast'"):
        ft.prepare_finetune(session, preset="demo-fast", overrides=["model.name=ast"], init_from=str(folder))
    assert session.runs().empty


@pytest.mark.slow
def test_ast_and_lora_paths_train_on_cpu(session, tmp_path):
    from transformers import ASTConfig, ASTForAudioClassification
    ast_small = ["features.max_length_s=1.0", "features.n_mels=32", "features.n_fft=512", "features.hop_length=160",
                 "features.f_min_hz=0", "model.ast_hidden_size=32", "model.ast_layers=1", "model.ast_heads=2",
                 "train.epochs=1", "train.batch_size=8", "mixup_p=0.5"]
    scratch = ft.finetune(session, preset="ast-lms", overrides=ast_small, progress=False)
    assert scratch.status == "succeeded", scratch.result

    pretrained = tmp_path / "pretrained_ast"
    config = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=32, max_length=101, frequency_stride=10, time_stride=10, num_labels=5)
    ASTForAudioClassification(config).save_pretrained(pretrained)
    lora = ft.finetune(session, preset="ast-lms", progress=False, init_from="none",
                       overrides=ast_small + [f"model.pretrained={pretrained}", "model.lora.enabled=true", "model.lora.rank=4"])
    assert lora.status == "succeeded", lora.result
    loaded = load_checkpoint(lora.run_dir / CHECKPOINT_DIR)
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in loaded.model.parameters()) / 2


@pytest.mark.slow
def test_two_cpu_processes_with_accelerate(session):
    outcome = ft.finetune(session, preset="demo-fast", overrides=FAST + ["train.epochs=2"], processes=2, progress=False)
    assert outcome.status == "succeeded", (outcome.result, (outcome.run_dir / "job.log").read_text()[-2000:])
    events = [json.loads(line) for line in (outcome.run_dir / "events.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["type"] == "start")  # after the phase and feature-fit info lines
    assert start["type"] == "start" and start["processes"] == 2
    assert len(session.predictions(outcome.run_id)) > 0


def test_cli_train_json_summary_and_one_line_errors(tmp_path, dataset, capsys):
    import app  # import and the refusal run in-process; the training runs the real entry point
    session_dir = tmp_path / "session"
    assert app.main(["import", "--session", str(session_dir), str(dataset), "--group-pattern", r"^(rec\d+)-", "--quiet"]) == 0
    cli = [sys.executable, str(REPO / "app.py")]
    sets = [arg for item in FAST + ["train.epochs=1"] for arg in ("--set", item)]
    done = subprocess.run(cli + ["train", "--session", str(session_dir), "--json"] + sets, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)  # stdout is the JSON object and nothing else
    assert line["status"] == "succeeded" and line["val_accuracy"] > 0.5 and line["run_id"]
    assert "epoch 1: train loss" in done.stderr  # the per-epoch lines go to stderr
    capsys.readouterr()
    assert app.main(["train", "--session", str(session_dir), "--set", "train.epochs=many"]) == 2
    assert capsys.readouterr().err.strip() == "earmark: error: train.epochs: expected an integer, got 'many'"
