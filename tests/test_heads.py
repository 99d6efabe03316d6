"""The optional heads of plan A (A10): the SupCon term, the envelope modulation rate and its cache,
heads-effect's two trainings (history, checkpoint without the heads, the pair report), the refusal
of an unknown class pair, the form's switches, and the pair-confusion numbers over seeds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_CNN, copy_session, write_wav
from core.augment import build_pipeline
from core.checkpoint import load_checkpoint
from core.config import ConfigError, EnvelopeHead, FeatureConfig, load_preset
from core.envelope import EnvelopeRateCache, log_rate_targets, modulation_rate
from core.features import FeatureCache
from core.losses import contrast_matrix, supervised_contrastive_loss
from core.seed_comparison import pair_confusions
from core.store import Store
from core.train import predict_probs
from pipelines import finetune as ft
from pipelines.heads_effect import WITH, WITHOUT, run_heads_effect
from workbench import train_form as tf
from workbench import train_handlers

SR = 16000
BAND = {"min_hz": 0.5, "max_hz": 20.0, "hop_ms": 10.0}
HEADS_ON = ["heads.contrastive.enabled=true", "heads.envelope.enabled=true"]


def am_tone(rate_hz: float, *, seconds: float = 4.0, depth: float = 0.5, carrier_hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * (1 + depth * np.sin(2 * np.pi * rate_hz * t)) * np.sin(2 * np.pi * carrier_hz * t)


# --- the supervised contrastive term ------------------------------------------------------------

def test_supcon_matches_the_hand_computed_value():
    # z: a, a' identical; b orthogonal to them; b' opposite a. temperature 1, so s_ij = z_i . z_j.
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])  # normalised inside: lengths do not count
    y = torch.tensor([0, 0, 1, 1])
    e = math.e
    anchors = [math.log(e + 1 + 1 / e) - 1,      # a:  positive a' (s=1), others b (0), b' (-1)
               math.log(e + 1 + 1 / e) - 1,      # a': the same
               math.log(3.0),                    # b:  positive b' (0), others a, a' (0, 0)
               math.log(1 + 2 / e)]              # b': positive b (0), others a, a' (-1, -1)
    value = supervised_contrastive_loss(z, y, temperature=1.0, contrasts=contrast_matrix(["a", "b"], []))
    assert float(value) == pytest.approx(sum(anchors) / 4, rel=1e-6)
    sharper = supervised_contrastive_loss(z, y, temperature=0.5, contrasts=contrast_matrix(["a", "b"], []))
    by_hand = (2 * (math.log(e ** 2 + 1 + e ** -2) - 2) + math.log(3.0) + math.log(1 + 2 * e ** -2)) / 4  # s_ij = 2 z_i . z_j
    assert float(sharper) == pytest.approx(by_hand, rel=1e-6)


def test_supcon_pairs_leave_other_classes_out():
    torch.manual_seed(0)
    pair = torch.randn(6, 8, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    contrasts = contrast_matrix(["siren", "alert", "speech"], [["siren", "alert"]])
    alone = supervised_contrastive_loss(pair, y, temperature=0.1, contrasts=contrasts)
    with_third = supervised_contrastive_loss(torch.cat([pair, torch.randn(3, 8)]), torch.cat([y, torch.tensor([2, 2, 2])]),
                                             temperature=0.1, contrasts=contrasts)
    assert float(with_third.detach()) == pytest.approx(float(alone.detach()), rel=1e-6)  # class 2 neither anchors nor contrasts
    alone.backward()
    assert pair.grad.abs().sum() > 0
    lonely = supervised_contrastive_loss(torch.randn(3, 8), torch.tensor([0, 1, 2]), temperature=0.1, contrasts=contrasts)
    assert float(lonely) == 0.0  # no positives in the batch: nothing to pull together
    with pytest.raises(ValueError, match="'alert_beeps' is not in the run's classes"):
        contrast_matrix(["siren", "alert"], [["siren", "alert_beeps"]])


# --- the envelope modulation rate --------------------------------------------------------------

@pytest.mark.parametrize("rate_hz", [0.8, 3.0, 7.5, 15.0])
def test_envelope_rate_of_amplitude_modulated_tones(rate_hz):
    rate, depth = modulation_rate(am_tone(rate_hz), sample_rate_hz=SR, **BAND)
    assert rate == pytest.approx(rate_hz, abs=0.02)
    assert 0.3 < depth <= 0.55  # modulation depth 0.5 (frame RMS smooths the fastest rates a little)


def test_envelope_rate_of_silence_steady_tones_and_short_clips():
    silent = modulation_rate(np.zeros(2 * SR), sample_rate_hz=SR, **BAND)
    assert math.isnan(silent[0]) and silent[1] == 0.0
    steady = modulation_rate(am_tone(3.0, depth=0.0), sample_rate_hz=SR, **BAND)
    assert steady[1] < 1e-6
    short = modulation_rate(am_tone(1.0, seconds=1.0), sample_rate_hz=SR, **BAND)
    assert short[0] >= 2.0  # 1 s holds two periods of 2 Hz at the slowest: 1 Hz cannot be claimed
    settings = EnvelopeHead(**BAND, min_depth=0.1)
    targets = log_rate_targets(np.array([[3.0, 0.5], [steady[0], steady[1]], [np.nan, 0.0]]), settings)
    assert targets[0] == pytest.approx(math.log(3.0)) and targets[1] == pytest.approx(math.log(0.5))
    assert math.isnan(targets[2])


def test_envelope_cache_reuses_rows_and_recomputes_for_a_changed_setting(tmp_path):
    paths = [write_wav(tmp_path / "audio" / f"am{rate}.wav", am_tone(rate, seconds=2.0)) for rate in (2.0, 5.0, 9.0)]
    features = FeatureConfig(max_length_s=2.0)
    cache = EnvelopeRateCache(tmp_path / "cache", features, EnvelopeHead())
    first = cache.build(paths, progress=False)
    assert (first.computed, first.reused) == (3, 0)
    rates = cache.get(paths)[:, 0]
    assert rates == pytest.approx([2.0, 5.0, 9.0], abs=0.02)
    again = EnvelopeRateCache(tmp_path / "cache", features, EnvelopeHead(min_depth=0.3, weight=1.0))  # read-time settings
    assert again.folder == cache.folder and again.build(paths, progress=False).reused == 3
    other_band = EnvelopeRateCache(tmp_path / "cache", features, EnvelopeHead(hop_ms=5.0))
    assert other_band.folder != cache.folder and other_band.build(paths, progress=False).computed == 3
    assert FeatureCache(tmp_path / "cache", features).folder.name.startswith("logmel-")  # the log-mel cache is its own


def test_time_stretch_scales_the_rate_a_sample_plays_at():
    pipeline = build_pipeline([{"name": "time_stretch", "params": {"rates": [1.1]}}, {"name": "gain"}], sample_rate_hz=SR)
    applied = pipeline.randomize_wave(np.random.default_rng(0), n_samples=SR)
    assert pipeline.time_scale(applied) == pytest.approx(1.1)
    stretched = pipeline.apply_wave(am_tone(4.0).astype(np.float32), applied[:1])
    assert modulation_rate(stretched, sample_rate_hz=SR, **BAND)[0] == pytest.approx(4.4, abs=0.05)


# --- training, checkpoints, refusals -------------------------------------------------------------

@pytest.mark.slow
def test_heads_effect_trains_both_configs_logs_the_heads_and_reports_the_pair(small_demo_session, tmp_path):
    session = copy_session(small_demo_session, tmp_path / "session")
    with Store.open(session) as store:
        effect = run_heads_effect(store, preset="demo-fast", seeds=[42], progress=False,
                                  overrides=[*TINY_CNN, "heads.contrastive.pairs=[[emergency_sirens, alert_sounds]]"])
        run_dirs = {name: Path(store.run(ids[0])["run_dir"]) for name, ids in effect.report["runs"].items()}
    rows = effect.report["splits"]["test"]
    assert [(r["true"], r["predicted"]) for r in rows] == [("emergency_sirens", "alert_sounds"),
                                                           ("alert_sounds", "emergency_sirens")]
    assert all(len(r["baseline_counts"]) == len(r["candidate_counts"]) == 1 for r in rows)
    assert set(effect.report["splits"]) == {"val", "test"} and effect.files["markdown"].is_file()
    assert "one seed: cannot be told from seed noise" in "\n".join(effect.lines())
    history = {name: json.loads((run_dir / "metrics.json").read_text())["history"] for name, run_dir in run_dirs.items()}
    assert all(row["train_contrastive_loss"] > 0 and row["train_envelope_loss"] >= 0 for row in history[WITH])
    assert not any("train_contrastive_loss" in row for row in history[WITHOUT])
    events = [json.loads(line) for line in (run_dirs[WITH] / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "epoch" and "train_envelope_loss" in e for e in events)
    assert any(e["type"] == "info" and e["message"].startswith("envelope rate:") for e in events)
    loaded = load_checkpoint(run_dirs[WITH] / "checkpoint")  # the classifier alone, as every checkpoint
    assert not any(name.startswith(("projection", "envelope")) for name in loaded.model.state_dict())
    cache = FeatureCache(json.loads((run_dirs[WITH] / "job.json").read_text())["cache_dir"], loaded.feature_cfg)
    manifest = pd.read_parquet(run_dirs[WITH] / "manifest.parquet")
    probs = predict_probs(loaded.model, cache, cache.rows(manifest.path.tolist()[:5]), loaded.norm_stats)
    assert probs.shape == (5, len(loaded.labels)) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_an_unknown_class_pair_is_refused_before_anything_trains(small_demo_session, tmp_path):
    session = copy_session(small_demo_session, tmp_path / "session")
    with Store.open(session) as store:
        runs_before = len(store.runs())
        with pytest.raises(ConfigError) as refused:
            ft.prepare_finetune(store, preset="sirens-focused", overrides=[*HEADS_ON[:1], *TINY_CNN[:3],
                                "heads.contrastive.pairs=[[emergency_sirens, alert_beeps]]"], init_from="none")
        assert len(store.runs()) == runs_before
    message = str(refused.value)
    assert "\n" not in message and message.startswith("heads.contrastive.pairs: class 'alert_beeps' is not in")


@pytest.mark.parametrize(("override", "message"), [
    ("mixup_p=1.0", "heads.contrastive.enabled: mixup_p is 1"),
    ("heads.contrastive.pairs=[[a, a]]", "heads.contrastive.pairs: ['a', 'a'] must name two different classes"),
    ("heads.envelope.max_hz=60", "heads.envelope.max_hz: 60.0 is out of range"),
])
def test_bad_head_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_preset("demo-fast", ["heads.contrastive.enabled=true", override])


def test_the_form_switches_become_overrides():
    config = load_preset("sirens-focused")
    scalars = {**tf.scalar_values(config), "heads.contrastive.enabled": True, "heads.envelope.enabled": True,
               "heads.envelope.weight": 0.25}
    form = [scalars[key] for key in tf.FORM_KEYS]
    tables = (tf.composition_table(config, ["emergency_sirens"]), tf.augment_table(config), tf.curriculum_table(config))
    chosen, overrides = train_handlers.resolve("sirens-focused", False, "", *form, *tables)
    assert overrides == ["heads.contrastive.enabled=true", "heads.envelope.enabled=true", "heads.envelope.weight=0.25"]
    assert load_preset("sirens-focused", overrides).heads == chosen.heads
    assert chosen.heads.contrastive.pairs == [["emergency_sirens", "alert_sounds"]]  # the preset's pair stays


# --- the report ----------------------------------------------------------------------------------

def _report(confusion: list[list[int]]) -> dict:
    labels = ["alert_sounds", "emergency_sirens", "road_traffic"]
    support = [sum(row) for row in confusion]
    return {"labels": labels, "confusion": {"counts": confusion},
            "per_class": {label: {"support": n} for label, n in zip(labels, support)}}


def test_pair_confusions_count_both_directions_and_pair_the_seeds():
    without = [_report([[8, 2, 0], [4, 6, 0], [0, 0, 10]]), _report([[9, 1, 0], [2, 8, 0], [0, 0, 10]])]
    with_heads = [_report([[10, 0, 0], [1, 9, 0], [0, 0, 10]]), _report([[9, 1, 0], [1, 9, 0], [0, 0, 10]])]
    rows = pair_confusions(baseline=without, candidate=with_heads, pairs=[["emergency_sirens", "alert_sounds"]])
    siren, alert = rows
    assert (siren["true"], siren["predicted"], siren["clips"]) == ("emergency_sirens", "alert_sounds", 10)
    assert siren["baseline_counts"] == [4, 2] and siren["candidate_counts"] == [1, 1]
    assert siren["baseline"]["mean"] == pytest.approx(0.3) and siren["candidate"]["mean"] == pytest.approx(0.1)
    assert siren["delta"]["delta"] == pytest.approx(-0.2) and siren["delta"]["seeds"] == 2
    assert siren["delta"]["ci95_low"] < -0.2 < siren["delta"]["ci95_high"]  # differences -0.3 and -0.1
    assert alert["baseline_counts"] == [2, 1] and alert["delta"]["delta"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="'alert_beeps' is not one of"):
        pair_confusions(baseline=without, candidate=with_heads, pairs=[["emergency_sirens", "alert_beeps"]])


def test_epoch_log_lines_name_the_auxiliary_losses():
    from workbench.job_queue import describe_event
    row = {"type": "epoch", "epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "val_f1_macro": 0.9,
           "train_contrastive_loss": 0.75, "train_envelope_loss": 0.125}
    assert describe_event(row).endswith("val F1 0.9000  contrastive loss 0.7500  envelope loss 0.1250")
    assert "loss 0.7500" not in describe_event({**row, "train_contrastive_loss": None})  # MixUp mixed every batch


def test_heads_effect_refuses_what_does_not_apply_in_one_line(small_demo_session, tmp_path, capsys):
    import app
    session = str(copy_session(small_demo_session, tmp_path / "session"))
    assert app.main(["heads-effect", "--session", session, "--study", "X", "--seeds", "1,2"]) == 2
    assert capsys.readouterr().err.strip() == ("earmark: error: --seeds does not apply to --study: the study was trained "
                                               "with its own")
    assert app.main(["heads-effect", "--session", session, "--pair", "emergency_sirens", "--seeds", "1"]) == 2
    assert capsys.readouterr().err.strip() == "earmark: error: --pair: 'emergency_sirens' must name two classes as A,B"
    assert app.main(["heads-effect", "--session", session, "--seeds", "1", "--set",
                     "heads.contrastive.pairs=[[emergency_sirens, alert_beeps]]"]) == 2
    assert "grid config 'with-heads': heads.contrastive.pairs: class 'alert_beeps'" in capsys.readouterr().err
    with Store.open(session) as store:
        assert store.runs(kind="study").empty  # nothing was planned, nothing trained
