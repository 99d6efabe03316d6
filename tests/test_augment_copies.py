"""Offline augmented copies in a real session: files, parent links, labels that follow, splits."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from core.config import ConfigError
from core.store import Store
from pipelines.augment_copies import DERIVED_DATASET, make_augmented_copies
from pipelines.finetune import freeze_manifest
from pipelines.importing import import_dataset
from test_train import make_dataset

REPO = Path(__file__).resolve().parent.parent
ONE_SECOND = ["features.max_length_s=1.0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds", per_class=12)


@pytest.fixture
def session(tmp_path, dataset):
    with Store.open(tmp_path / "session") as store:
        import_dataset(store, dataset, group_pattern=r"^(rec\d+)-", progress=False)
        yield store


def copies_of(store: Store) -> pd.DataFrame:
    state = store.labels()
    return state[state.parent_clip_id.notna()]


def test_copies_are_training_clips_linked_to_their_parents_with_what_was_applied(session):
    summary = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, progress=False)
    state = session.labels().set_index("clip_id")
    sirens = state[(state.label == "emergency_sirens") & (state.split == "train") & state.parent_clip_id.isna()]
    copies = copies_of(session).set_index("clip_id")
    assert summary.parents == len(sirens) > 0 and summary.made == len(copies) == 2 * len(sirens)  # augment_copies: 2
    assert set(copies.parent_clip_id.astype(int)) == set(sirens.index)  # A4: sirens only (augment_classes)
    assert (copies.split == "train").all() and (copies.label == "emergency_sirens").all()
    clips = session.clips().set_index("id")
    root = Path(session.datasets().set_index("name").loc[DERIVED_DATASET, "root"])
    assert root == Path(session.session_dir) / "derived"  # in the session, never beside the source audio
    for clip_id, copy in copies.iterrows():
        record = json.loads(clips.at[clip_id, "metadata"])["augment"]
        names = [a["name"] for a in record["applied"]]
        assert names[:2] == ["time_stretch", "pitch_shift"] and set(names[2:]) <= {"gain_dips", "band_stop"}  # p 1 / p < 1
        rate = record["applied"][0]["params"]["rate"]
        assert rate in (0.95, 1.05) and record["applied"][1]["params"]["semitones"] in (-1.0, 1.0)
        audio, rate_hz = sf.read(root / copy.path)
        parent = state.loc[int(copy.parent_clip_id)]
        assert rate_hz == 16000 and audio.size == pytest.approx(16000 / rate, abs=2)  # 1 s parents
        assert copy.source_group == parent.source_group and copy.original_label == parent.original_label
    drawn = {json.dumps(json.loads(clips.at[c, "metadata"])["augment"]["applied"][:2]) for c in copies.index}
    assert len(drawn) == 4  # each copy draws its own rate and shift: all four A4 combinations occur


def test_copies_follow_their_parents_relabel_and_exclusion_and_never_reach_val_or_test(session):
    make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, progress=False)
    copies = copies_of(session)
    parent = int(copies.parent_clip_id.iloc[0])
    session.record_decision(parent, annotator="ann", action="relabel", new_label="alert_sounds")
    followed = copies_of(session).set_index("clip_id")
    assert set(followed[followed.parent_clip_id == parent].label) == {"alert_sounds"}
    manifest, _ = freeze_manifest(session)
    derived = manifest[manifest.parent_clip_id.notna()]
    assert len(derived) == len(copies) and set(derived.split) == {"train"}
    assert set(derived.augmentations) <= {"pitch_shift+time_stretch", "gain_dips+pitch_shift+time_stretch",
                                          "band_stop+pitch_shift+time_stretch", "band_stop+gain_dips+pitch_shift+time_stretch"}
    assert derived[derived.parent_clip_id == parent].hard.all()  # the parent was relabelled: its copies are hard too
    assert set(manifest.dataset) == {"ds"}  # a copy is broken down under its parent's dataset
    assert not [c for c in manifest.columns if c.startswith("meta.")]  # the augmentation record is no metadata column

    session.record_decision(parent, annotator="ann", action="exclude", set_excluded=True)
    manifest, _ = freeze_manifest(session)
    assert parent not in set(manifest.parent_clip_id.dropna()) and parent not in set(manifest.clip_id)

    # A derived clip whose parent is not a training clip (made by hand, not by this pipeline) is never trained on or evaluated.
    val_clip = session.labels().query("split == 'val' and parent_clip_id.isna()").iloc[0]
    dataset_id = int(session.datasets().set_index("name").loc[DERIVED_DATASET, "id"])
    session.add_clips(dataset_id, pd.DataFrame({"path": ["by-hand.wav"], "status": "ok", "split": "train",
                                                "parent_clip_id": [int(val_clip.clip_id)]}))
    manifest, _ = freeze_manifest(session)
    assert "by-hand.wav" not in {Path(p).name for p in manifest.path}


def test_copies_are_idempotent_and_remake_a_deleted_file(session):
    first = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, progress=False)
    before = session.clip_count()
    again = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, progress=False)
    assert (again.made, again.existing) == (0, first.made) and session.clip_count() == before
    victim = next(first.folder.glob("*.wav"))
    content = sf.read(victim)[0]
    victim.unlink()
    healed = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, progress=False)
    assert healed.made == 1 and session.clip_count() == before
    assert np.array_equal(sf.read(victim)[0], content)  # the same draw, the same audio
    other = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, seed=7, progress=False)
    assert other.folder != first.folder and other.made == first.made  # other settings: other copies, kept apart


def test_only_usable_training_clips_get_copies(session):
    state = session.labels()
    val_clip = int(state.query("split == 'val'").clip_id.iloc[0])
    with pytest.raises(ConfigError, match=rf"clip {val_clip} is in the 'val' split: augmented copies are made only "
                                          r"from training clips"):
        make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, clip_ids=[val_clip], progress=False)
    train_clip = int(state.query("split == 'train'").clip_id.iloc[0])
    session.record_decision(train_clip, annotator="ann", action="quarantine", set_quarantined=True)
    with pytest.raises(ConfigError, match=rf"clip {train_clip} is not usable for training \(quarantined\)"):
        make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, clip_ids=[train_clip], progress=False)
    with pytest.raises(ConfigError, match=r"classes: \['owls'\] are not labels in this session"):
        make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, classes=["owls"], progress=False)
    with pytest.raises(ConfigError, match="names no waveform augmentation"):
        make_augmented_copies(session, preset="ast-lms", progress=False)
    road = int(state.query("split == 'train' and label == 'road_traffic'").clip_id.iloc[0])
    made = make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, clip_ids=[road],
                                 copies_per_clip=1, progress=False)
    assert made.made == 1
    copy = int(copies_of(session).clip_id.iloc[0])
    with pytest.raises(ConfigError, match=rf"clip {copy} is itself an augmented copy \(of clip {road}\)"):
        make_augmented_copies(session, preset="sirens-focused", overrides=ONE_SECOND, clip_ids=[copy], progress=False)


@pytest.mark.slow
def test_cli_augment_copies_json_and_one_line_errors(tmp_path, dataset):
    session_dir = tmp_path / "session"
    cli = [sys.executable, str(REPO / "app.py")]
    subprocess.run(cli + ["import", "--session", str(session_dir), str(dataset), "--group-pattern", r"^(rec\d+)-", "--quiet"],
                   check=True, cwd=REPO, capture_output=True)
    done = subprocess.run(cli + ["augment-copies", "--session", str(session_dir), "--preset", "sirens-focused",
                                 "--set", "features.max_length_s=1.0", "--copies", "1", "--json"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["made"] == summary["parents"] > 0 and summary["failed"] == {}
    bad = subprocess.run(cli + ["augment-copies", "--session", str(session_dir), "--classes", "owls"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("earmark: error: classes: ['owls'] are not labels in this session")
