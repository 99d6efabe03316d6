"""The Train tab's form as data: preset -> fields -> overrides, and bad values named by their key."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from core.config import ConfigError, load_preset
from workbench import train_form as tf
from workbench.job_queue import Job
from workbench.train_progress import BAR_COLOURS, jobs_frame, progress_html
from workbench.train_tab import default_preset

CLASSES = ["alert_sounds", "collision_sounds", "emergency_sirens", "environmental_sounds", "human_scream", "road_traffic"]


def form_of(config):
    """The form's values as Gradio hands them back (tables of objects, text cells as strings)."""
    return (tf.scalar_values(config), tf.composition_table(config, CLASSES).astype(object),
            tf.augment_table(config).astype(object), tf.curriculum_table(config).astype(object))


@pytest.mark.parametrize("preset", ["sirens-focused", "demo-fast", "ast-lms", "class-weighted-baseline"])
def test_an_untouched_form_is_the_preset_itself(preset):
    config = load_preset(preset)
    assert tf.overrides_between(config, tf.config_from_form(config, *form_of(config))) == []
    assert tf.overrides_between(config, tf.config_from_yaml(tf.to_yaml(config))) == []


def test_changed_fields_become_dotted_overrides_that_load_preset_reproduces():
    config = load_preset("sirens-focused")
    scalars, composition, augment, curriculum = form_of(config)
    scalars = {**scalars, "train.lr": 1e-4, "train.backbone_lr": "5e-5", "train.warmup_steps": 10}
    composition.iloc[0, 1] = "7"                                    # text cells are read as YAML
    augment = pd.DataFrame([["gain", 0.5, "{min_gain_db: -6, max_gain_db: 6}"]], columns=tf.AUGMENT_COLUMNS)
    curriculum.iloc[3, 5] = ""                                      # the last stage's lr override removed
    changed = tf.config_from_form(config, scalars, composition, augment, curriculum)
    overrides = tf.overrides_between(config, changed)
    assert overrides[:3] == ["train.lr=0.0001", "train.backbone_lr=5e-05", "train.warmup_steps=10"]
    assert [o.split("=", 1)[0] for o in overrides[3:]] == ["train.batch_composition", "train.curriculum", "augment"]
    reloaded = load_preset("sirens-focused", overrides)
    assert reloaded == changed
    assert reloaded.train.batch_composition["alert_sounds"] == 7
    assert reloaded.train.curriculum[3].lr is None
    assert reloaded.augment[0].name == "gain" and reloaded.augment[0].p == 0.5


def test_all_zero_composition_means_plain_batches():
    config = load_preset("sirens-focused")
    scalars, composition, augment, curriculum = form_of(config)
    composition.iloc[:, 1] = 0
    assert tf.config_from_form(config, scalars, composition, augment, curriculum).train.batch_composition is None


@pytest.mark.parametrize(("field", "value", "message"), [
    ("train.epochs", 0, "train.epochs: 0 is out of range [1, 10000]"),
    ("train.lr", "fast", "train.lr: expected a number, got 'fast'"),
    ("train.schedule", "sawtooth", "train.schedule: 'sawtooth' is not one of 'cosine', 'linear', 'constant'"),
    ("train.batch_size", -3, "train.batch_size: -3 is out of range [1, 65536]"),
])
def test_a_bad_field_is_refused_naming_its_key(field, value, message):
    config = load_preset("demo-fast")
    scalars, composition, augment, curriculum = form_of(config)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tf.config_from_form(config, {**scalars, field: value}, composition, augment, curriculum)


def test_bad_table_cells_and_yaml_are_named_too():
    config = load_preset("sirens-focused")
    scalars, composition, augment, curriculum = form_of(config)
    composition.iloc[1, 1] = "lots"
    with pytest.raises(ConfigError, match=r"train\.batch_composition\.collision_sounds: expected an integer, got 'lots'"):
        tf.config_from_form(config, scalars, composition, augment, curriculum)
    bad_p = pd.DataFrame([["gain", 2, ""]], columns=tf.AUGMENT_COLUMNS)
    with pytest.raises(ConfigError, match=r"augment\.gain\.p: 2\.0 is out of range"):
        tf.config_from_form(config, scalars, form_of(config)[1], bad_p, curriculum)
    bad_params = pd.DataFrame([["gain", 0.5, "loud"]], columns=tf.AUGMENT_COLUMNS)
    with pytest.raises(ConfigError, match=r"augment\[0\]\.params: expected a mapping"):
        tf.config_from_form(config, scalars, form_of(config)[1], bad_params, curriculum)
    unknown = pd.DataFrame([["reverb", 0.5, ""]], columns=tf.AUGMENT_COLUMNS)
    with pytest.raises(ConfigError, match="augment: unknown augmentation 'reverb'; registered: background_noise"):
        tf.config_from_form(config, scalars, form_of(config)[1], unknown, curriculum)
    with pytest.raises(ConfigError, match=r"train\.warmup_steps: -1 is out of range"):
        tf.config_from_yaml(tf.to_yaml(config).replace("warmup_steps: 50", "warmup_steps: -1"))
    with pytest.raises(ConfigError, match="advanced YAML: not valid YAML"):
        tf.config_from_yaml("train: [")


def test_sirens_focused_is_preselected_for_the_siren_task():
    presets = ["ast-lms", "demo-fast", "sirens-focused"]
    assert default_preset(CLASSES, presets) == "sirens-focused"
    assert default_preset(["cat", "dog"], presets) == "demo-fast"


def finished_job(run_id: str, *, status: str = "succeeded", gates_passed: bool | None = None) -> Job:
    return Job(run_id=run_id, run_dir=Path(run_id), preset="sirens-focused", overrides=[], submitted_by="ana",
               frozen_at_decision=7, submitted_at=0.0, status=status, phase="done", gates_passed=gates_passed,
               start="production run P", start_note="starts from production run P",
               transfer={"copied": 26, "total": 26, "kept_fresh": []})


def test_a_finished_job_says_whether_its_gates_passed_and_is_coloured_by_the_verdict():
    jobs = [finished_job("a", gates_passed=True), finished_job("b", gates_passed=False), finished_job("c"),
            finished_job("d", status="failed", gates_passed=False)]
    manager = SimpleNamespace(current=lambda: None, queue=lambda: [], jobs=lambda: jobs)
    assert jobs_frame(SimpleNamespace(jobs=manager)).state.tolist() == [
        "failed", "succeeded", "trained, gates failed", "trained, gates passed"]  # newest first

    passed, failed = progress_html(jobs[0]), progress_html(jobs[1])
    assert 'data-status="succeeded" data-gates="passed"' in passed and 'data-gates="failed"' in failed
    assert f"background:{BAR_COLOURS['succeeded']}" in passed and f"background:{BAR_COLOURS['failed']}" in failed
    assert "trained, gates failed &middot; started from production run P: 26 of 26 tensors copied" in failed


def test_the_epochs_field_says_a_curriculum_decides_the_epochs():
    sirens = load_preset("sirens-focused")  # four one-epoch stages
    note = tf.epochs_note(sirens)
    assert note.startswith("Set by the curriculum below: 4 stage(s), 4 epoch(s) in all")
    assert "train.epochs is ignored" in note
    assert tf.epochs_note(load_preset("demo-fast")) is None  # no curriculum: the field applies
    # The form without its curriculum rows has no curriculum: epochs apply again.
    scalars, composition, augment, curriculum = form_of(sirens)
    assert tf.epochs_note(tf.config_from_form(sirens, scalars, composition, augment, curriculum.iloc[0:0])) is None
