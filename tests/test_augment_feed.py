"""Augmented training batches: which samples an epoch holds, on the fly vs offline, and whole runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.augment import AugmentFeed
from core.augment.feed import COPIES_FILE, DECISION_FILE
from core.config import ConfigError, load_preset
from core.features import FeatureCache, compute_norm_stats, normalize
from core.sampling import stage_for_epoch
from core.store import Store
from pipelines import finetune as ft
from pipelines.augment_copies import make_augmented_copies
from pipelines.importing import import_dataset
from test_train import FAST, make_dataset

SMALL = ["features.max_length_s=1.0", "features.n_mels=32", "features.f_max_hz=null"]  # what a run fits to these clips
# Epoch 1 stretches only; epoch 2 (the run's list) may add a gain dip and SpecAugment.
AUGMENTED = SMALL + [
    "augment=[{name: time_stretch, params: {rates: [1.05]}}, {name: gain_dips, p: 0.5}, "
    "{name: spec_augment, params: {freq_width: 8, time_width: 10}}]",
    "augment_copies=1",
    "train.curriculum=[{epochs: 1, augment: [{name: time_stretch, params: {rates: [1.05]}}]}, {epochs: 1}]"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds", per_class=8)


@pytest.fixture
def feed_parts(tmp_path, dataset):
    config = load_preset("demo-fast", AUGMENTED)
    paths = sorted(str(p) for p in dataset.rglob("*.wav"))
    cache = FeatureCache(tmp_path / "cache", config.features)
    cache.build(paths, progress=False)
    train = pd.DataFrame({"path": paths, "row": cache.rows(paths), "label": [Path(p).parent.name for p in paths],
                          "clip_id": range(len(paths))})
    stats = compute_norm_stats(cache.array)
    stages = [stage_for_epoch(config.train.curriculum, e)[1] for e in range(2)]
    return config, cache, train, stats, stages


def make_feed(feed_parts, **changes) -> AugmentFeed:
    config, cache, train, stats, stages = feed_parts
    for key, value in changes.items():
        setattr(config, key, value)
    return AugmentFeed(train, config, cache=cache, norm_stats=stats, stages=stages, workers=2)


def test_on_the_fly_epochs_hold_clean_clips_plus_copies_drawn_afresh(feed_parts):
    _, cache, train, stats, _ = feed_parts
    feed = make_feed(feed_parts)
    n = len(train)
    assert feed.mode == "on_the_fly" and len(feed.sample_ids(0)) == len(feed.sample_ids(1)) == 2 * n
    ids = np.array([0, 1, n, n + 1])  # two clean clips, then their copies
    plain = normalize(torch.from_numpy(cache.take(train["row"].to_numpy()[[0, 1, 0, 1]])), stats)
    first = feed.features(ids, epoch=0, batch_index=3)
    assert first.shape == plain.shape and torch.equal(first[:2], plain[:2])  # epoch 1: no SpecAugment on clean clips
    assert not torch.allclose(first[2:], plain[2:], atol=0.1)  # the copies are stretched
    assert torch.equal(feed.features(ids, epoch=0, batch_index=3), first)  # same seed, same batch
    scales = feed.time_scales(ids, epoch=0, batch_index=3)  # the stretch those copies were rendered with
    assert scales.round(6).tolist() == [1.0, 1.0, 1.05, 1.05]
    everything = normalize(torch.from_numpy(cache.take(train["row"].to_numpy())), stats)
    changed = (feed.features(np.arange(n), epoch=1, batch_index=0) != everything).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.8  # epoch 2's list has SpecAugment (p 1): clean clips are masked too


def test_offline_copies_are_rendered_once_and_an_epoch_takes_those_its_list_allows(feed_parts, tmp_path):
    feed = make_feed(feed_parts)
    n = feed.n
    batches = {e: [feed.sample_ids(e)[-8:], feed.sample_ids(e)[:8]] for e in (0, 1)}
    decision = feed.prepare(tmp_path, decide=True, batches=batches, time_model_step=lambda x, rows: 1e-6)
    assert decision.mode == "offline" and "not below it" in decision.reason
    assert decision.copies == n and decision.augment_cost_vs_model_step > 1  # every copy is stretched (p 1)
    assert (tmp_path / COPIES_FILE).is_file()
    saved = json.loads((tmp_path / DECISION_FILE).read_text())
    dipped = {row for row, copy, names, _ in saved["slots"] if "gain_dips" in names}
    assert 0 < len(dipped) < n  # p 0.5
    epoch1, epoch2 = feed.sample_ids(0), feed.sample_ids(1)
    assert len(epoch1) == 2 * n - len(dipped) and set(epoch1 - n) & dipped == set()  # epoch 1 lists no gain dips
    assert len(epoch2) == 2 * n
    # another process (DDP rank) reads the same decision and the same copies
    reader = make_feed(feed_parts)
    assert reader.prepare(tmp_path, decide=False, batches={}, time_model_step=lambda x, rows: 1.0) == decision
    copies = epoch2[epoch2 >= n][:6]
    assert torch.equal(reader.features(copies, epoch=1, batch_index=0), feed.features(copies, epoch=1, batch_index=0))
    stretched = {(row, copy): scale for row, copy, _, scale in saved["slots"]}  # what the envelope head's targets scale by
    assert {round(s, 6) for s in stretched.values()} == {1.05}  # the run's one rate, p 1
    assert reader.time_scales(copies, epoch=1, batch_index=0).tolist() == [stretched[(int(c) - n, 1)] for c in copies]
    assert reader.time_scales(epoch2[:4], epoch=1, batch_index=0).tolist() == [1.0] * 4  # clean clips play as recorded
    feed.close(tmp_path)
    reader.close()
    assert not (tmp_path / COPIES_FILE).exists()


def test_the_cost_rule_keeps_cheap_augmentation_on_the_fly(feed_parts, tmp_path):
    feed = make_feed(feed_parts)
    batches = {e: [feed.sample_ids(e)[-8:], feed.sample_ids(e)[:8]] for e in (0, 1)}
    decision = feed.prepare(tmp_path, decide=True, batches=batches, time_model_step=lambda x, rows: 1e3)
    assert decision.mode == "on_the_fly" and "below it, so it stays on the fly" in decision.reason
    assert 0 < decision.augment_s_per_batch < 1e3 and decision.model_step_s == 1e3
    assert not (tmp_path / COPIES_FILE).exists()
    forced = make_feed(feed_parts, augment_mode="on_the_fly")
    assert forced.prepare(tmp_path, decide=True, batches=batches, time_model_step=lambda x, rows: 1e-6).mode == "on_the_fly"


def test_augment_classes_limit_what_is_augmented(feed_parts):
    feed = make_feed(feed_parts, augment_classes=["emergency_sirens"])
    sirens = int((feed_parts[2].label == "emergency_sirens").sum())
    assert len(feed.sample_ids(1)) == feed.n + sirens
    with pytest.raises(ConfigError, match=r"augment_classes: \['owls'\] have no training clips"):
        make_feed(feed_parts, augment_classes=["owls"])


@pytest.fixture
def session(tmp_path):
    dataset = make_dataset(tmp_path / "ds")
    with Store.open(tmp_path / "session") as store:
        import_dataset(store, dataset, group_pattern=r"^(rec\d+)-", progress=False)
        yield store


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["on_the_fly", "offline"])
def test_training_with_augmentation_on(session, mode):
    four_epochs = "train.curriculum=[{epochs: 2, augment: [{name: time_stretch, params: {rates: [1.05]}}]}, {epochs: 2}]"
    overrides = FAST + AUGMENTED + [four_epochs, f"augment_mode={mode}"]
    outcome = ft.finetune(session, preset="demo-fast", overrides=overrides, init_from="none", progress=False)
    assert outcome.status == "succeeded", outcome.result
    augmentation = outcome.result["augmentation"]
    assert augmentation["mode"] == mode and augmentation["model_step_s"] > 0
    assert (augmentation["copies"] > 0) == (mode == "offline")
    info = [e for e in events_of(outcome.run_dir) if e["type"] == "info" and "augmentation" in e]
    assert info and info[0]["message"].startswith(f"augmentation {mode}:")
    start = next(e for e in events_of(outcome.run_dir) if e["type"] == "start")
    train_clips = start["train_clips"]
    assert start["total_steps"] >= 2 * train_clips // 8  # clean clips + their copies, every epoch
    assert not (outcome.run_dir / COPIES_FILE).exists()  # offline copies are scratch
    assert outcome.result["accuracy"]["val"] >= 0.8


@pytest.mark.slow
def test_the_sirens_preset_trains_on_session_copies(session):
    make_augmented_copies(session, preset="sirens-focused", overrides=SMALL, progress=False)
    overrides = FAST + SMALL + ["train.batch_composition={emergency_sirens: 4, alert_sounds: 2, road_traffic: 2}",
                                "train.lr=0.002", "train.warmup_steps=0"]
    outcome = ft.finetune(session, preset="sirens-focused", overrides=overrides, init_from="none", progress=False)
    assert outcome.status == "succeeded", outcome.result
    assert outcome.result["augmentation"]["mode"] == "session_copies"
    manifest = pd.read_parquet(outcome.run_dir / "manifest.parquet")
    assert manifest.parent_clip_id.notna().sum() == outcome.result["augmentation"]["session_copies"] > 0
    assert [e["stage"] for e in events_of(outcome.run_dir) if e["type"] == "epoch"] == [1, 2, 3, 4]


def test_the_feed_opens_the_bank_only_when_a_step_draws_from_it_and_never_a_relative_one(feed_parts, tmp_path):
    assert make_feed(feed_parts, noise_bank=str(tmp_path / "no-bank")).bank is None  # no background_noise: not read
    noisy = [*feed_parts[0].augment, *load_preset("speech-cnn").augment[:1]]  # + background_noise
    with pytest.raises(ConfigError, match="noise_bank: 'noise_bank' is relative to a session folder that this run"):
        make_feed(feed_parts, noise_bank="noise_bank", augment=noisy)
