"""The built-in demo session: synthesised, imported, rules seeded, idempotent, CLI and `python app.py`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.relabel_rules import load_rules
from core.store import Store
from pipelines.demo import DEFAULT_AUDIO, SIRENS_RULES_FILE, build_demo_session, default_audio_dir

SIRENS_RULES = load_rules(SIRENS_RULES_FILE)
REPO = Path(__file__).resolve().parent.parent


def test_demo_session_is_built_once_with_hidden_truth_and_sirens_rules(tmp_path):
    session, audio = tmp_path / "session", tmp_path / "audio"
    first = build_demo_session(session_dir=session, audio_dir=audio, clips_per_class=12, progress=False)
    assert first.imported.added == 72 and first.imported.unreadable == 0
    with Store.open(session) as store:
        clips = store.clips()
        assert set(clips.original_label) == {"emergency_sirens", "collision_sounds", "alert_sounds", "road_traffic",
                                             "human_scream", "environmental_sounds"}
        metadata = [json.loads(m) for m in clips.metadata]
        assert all("true_label" in m for m in metadata)
        wrong = sum(m["true_label"] != given for m, given in zip(metadata, clips.original_label))
        assert wrong >= 1  # planted label errors, recorded for scoring only
        assert clips.groupby("source_group").split.nunique().max() == 1
        assert [r.tag for r in store.rules()] == [r.tag for r in SIRENS_RULES]
        store.set_rule(type(SIRENS_RULES[0])("true_siren", "relabel", "emergency_sirens", False, "edited", "1"))
    again = build_demo_session(session_dir=session, audio_dir=audio, clips_per_class=12, progress=False)
    assert again.imported.added == 0 and again.imported.already_imported == 72
    with Store.open(session) as store:
        assert {r.tag: r.description for r in store.rules()}["true_siren"] == "edited"  # edits survive a rebuild


def test_each_demo_variant_has_its_own_audio_folder():
    assert default_audio_dir(seed=0, clips_per_class=100) == DEFAULT_AUDIO
    assert default_audio_dir(seed=0, clips_per_class=100, duration_range_s=(3, 10)) == DEFAULT_AUDIO
    variants = {default_audio_dir(seed=seed, clips_per_class=n, duration_range_s=lengths)
                for seed in (0, 1) for n in (12, 100) for lengths in ((3.0, 10.0), (2.0, 5.0))}
    assert len(variants) == 8 and all(folder.parent == DEFAULT_AUDIO.parent for folder in variants)


@pytest.mark.slow
def test_cli_demo_then_stats(tmp_path):
    default_audio = REPO / "data" / "demo_audio" / "manifest.csv"
    before = default_audio.stat().st_mtime_ns if default_audio.exists() else None
    session = tmp_path / "session"
    cli = [sys.executable, str(REPO / "app.py")]
    built = subprocess.run(cli + ["demo", "--session", str(session), "--clips-per-class", "12", "--quiet"],
                           capture_output=True, text=True, cwd=REPO)
    assert built.returncode == 0, built.stderr
    assert "72 readable added, 0 unreadable recorded" in built.stdout
    stats = subprocess.run(cli + ["stats", "--session", str(session), "--json"], capture_output=True, text=True, cwd=REPO)
    summary = json.loads(stats.stdout)
    assert summary["clips"] == 72
    assert sum(v["total"] for v in summary["per_class_split"].values()) == 72
    assert "true_label" not in stats.stdout  # the hidden truth never reaches a user-facing view
    # a small demo has its own audio folder: the default demo's audio is left alone
    assert (default_audio.stat().st_mtime_ns if default_audio.exists() else None) == before
