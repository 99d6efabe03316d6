"""Dataset import through real files and a real session store."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tone, write_corrupt_set, write_odd_but_valid_set, write_wav
from core.config import ConfigError
from core.store import Store
from pipelines.importing import ClassMap, DatasetImportError, discover_dataset, import_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "session") as s:
        yield s


def make_folder_dataset(root: Path, *, per_class: int = 10, groups_per_class: int = 5) -> Path:
    for c, (label, freq) in enumerate({"siren": 900, "beep": 700, "rain": 200}.items()):
        for i in range(per_class):
            group = f"rec{c}{i % groups_per_class}"
            write_wav(root / label / f"{group}-{i}.wav", tone(freq + i, seconds=0.5))
    return root


def test_folder_import_records_every_bad_file_and_keeps_the_odd_valid_ones(store, tmp_path):
    root = make_folder_dataset(tmp_path / "ds")
    expected_bad = write_corrupt_set(root / "beep")
    expected_odd = write_odd_but_valid_set(root / "siren")
    summary = import_dataset(store, root, progress=False)

    assert summary.layout == "folder"
    assert summary.found == 30 + len(expected_bad) + len(expected_odd)
    assert summary.added == summary.found  # nothing vanished
    assert summary.unreadable == len(expected_bad)
    clips = store.clips().set_index("path")
    for name, kind in expected_bad.items():
        row = clips.loc[f"beep/{name}"]
        assert row.status == "unreadable", name
        assert row.reason.startswith(kind), (name, row.reason)
    for name, (rate, channels) in expected_odd.items():
        row = clips.loc[f"siren/{name}"]
        assert (row.status, row.sample_rate_hz, row.channels) == ("ok", rate, channels)
        assert row.duration_s == pytest.approx(1.0)
    assert "unreadable by kind" in "\n".join(summary.lines())


def test_reimport_adds_nothing_and_picks_up_new_files(store, tmp_path):
    root = make_folder_dataset(tmp_path / "ds")
    first = import_dataset(store, root, progress=False)
    again = import_dataset(store, root, progress=False)
    assert (first.added, again.added, again.already_imported) == (30, 0, 30)
    write_wav(root / "rain" / "late-1.wav", tone(150, seconds=0.5))
    third = import_dataset(store, root, progress=False)
    assert third.added == 1 and store.clip_count() == 31


def test_grouped_split_is_seeded_stratified_and_leak_free(store, tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=40, groups_per_class=20)
    import_dataset(store, root, group_pattern=r"^(rec\d+)-", seed=7, progress=False)
    clips = store.clips()
    assert clips.groupby("source_group").split.nunique().max() == 1  # no group in two splits
    fractions = clips.split.value_counts(normalize=True)
    assert fractions["train"] == pytest.approx(0.6, abs=0.08)
    assert fractions["val"] == pytest.approx(0.2, abs=0.08)
    assert fractions["test"] == pytest.approx(0.2, abs=0.08)
    assert (clips.groupby("original_label").split.nunique() == 3).all()  # every class in every split

    with Store.open(tmp_path / "other") as other:
        import_dataset(other, root, group_pattern=r"^(rec\d+)-", seed=7, progress=False)
        same = other.clips().set_index("path").split
    assert (clips.set_index("path").split == same).all()  # same seed, same split


def test_manifest_keeps_splits_groups_and_extra_columns_as_metadata(store, tmp_path):
    audio = tmp_path / "audio"
    rows = []
    for i in range(6):
        write_wav(audio / f"c{i}.wav", tone(300 + 100 * i, seconds=0.4))
        rows.append({"filename": f"audio/c{i}.wav", "class": "a" if i % 2 else "b",
                     "split": ["train", "validation", "test"][i % 3], "speaker": f"s{i // 2}", "snr_db": 5 * i})
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    summary = import_dataset(store, manifest, progress=False)
    clips = store.clips().set_index("path")
    assert summary.layout == "manifest" and summary.added == 6
    assert clips.loc["audio/c1.wav", "split"] == "val"  # "validation" understood
    assert clips.loc["audio/c3.wav", "source_group"] == "s1"
    assert json.loads(clips.loc["audio/c4.wav", "metadata"]) == {"snr_db": 20}
    assert any("more than one" in w for w in summary.warnings)  # s0 spans train and val: reported, kept


def test_parquet_manifest_with_trusted_metadata_only_checks_existence(store, tmp_path):
    write_wav(tmp_path / "a.wav", tone(500))
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.wav", "gone.wav"], "label": ["x", "y"], "duration_s": [1.0, 2.0],
                  "sample_rate_hz": [16000, 16000]}).to_parquet(manifest)
    import_dataset(store, manifest, progress=False)
    clips = store.clips().set_index("path")
    assert clips.loc["a.wav", "status"] == "ok" and clips.loc["a.wav", "duration_s"] == 1.0
    assert clips.loc["gone.wav", "status"] == "unreadable"
    assert clips.loc["gone.wav", "reason"].startswith("missing")


def test_manifest_path_outside_the_root_is_refused_per_row(store, tmp_path):
    outside = write_wav(tmp_path / "elsewhere" / "x.wav", tone(500))
    (tmp_path / "ds").mkdir()
    manifest = tmp_path / "ds" / "m.csv"
    pd.DataFrame({"path": [str(outside), "../elsewhere/x.wav"], "label": ["a", "a"]}).to_csv(manifest, index=False)
    summary = import_dataset(store, manifest, progress=False)
    assert summary.unreadable == 2
    assert all("outside the dataset root" in r for r in store.clips().reason)


def make_esc50(root: Path) -> Path:
    rows = []
    for i, (category, fold) in enumerate([("siren", 1), ("siren", 4), ("dog", 5), ("car_horn", 2), ("rain", 3)]):
        name = f"{fold}-{1000 + i}-A-{i}.wav"
        write_wav(root / "audio" / name, tone(400 + 50 * i, seconds=0.5))
        rows.append({"filename": name, "fold": fold, "target": i, "category": category, "esc10": False,
                     "src_file": 1000 + i, "take": "A"})
    (root / "meta").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
    return root


def test_esc50_layout_keeps_folds_and_applies_a_class_map(store, tmp_path):
    root = make_esc50(tmp_path / "ESC-50")
    class_map_file = tmp_path / "map.yaml"
    class_map_file.write_text("classes:\n  siren: emergency_sirens\n  car_horn: alert_sounds\nunmapped: drop\n")
    summary = import_dataset(store, root, class_map=ClassMap.load(class_map_file), progress=False)
    assert summary.layout == "esc50"
    assert (summary.added, summary.dropped_unmapped, summary.dropped_classes) == (3, 2, ["dog", "rain"])
    clips = store.clips().set_index("fold")
    assert clips.loc["1", "original_label"] == "emergency_sirens" and clips.loc["1", "split"] == "train"
    assert clips.loc["4", "split"] == "val"
    assert clips.loc["2", "original_label"] == "alert_sounds"
    assert json.loads(clips.loc["1", "metadata"])["take"] == "A"


def test_keep_unmapped_keeps_source_classes(store, tmp_path):
    root = make_esc50(tmp_path / "ESC-50")
    class_map = ClassMap(mapping={"siren": "emergency_sirens"}, unmapped="keep")
    import_dataset(store, root, class_map=class_map, progress=False)
    assert set(store.clips().original_label) == {"emergency_sirens", "dog", "car_horn", "rain"}


def test_urbansound8k_layout(store, tmp_path):
    root = tmp_path / "UrbanSound8K"
    rows = []
    for i, fold in enumerate([1, 7, 9, 10]):
        name = f"{100 + i}-0-0-{i}.wav"
        write_wav(root / "audio" / f"fold{fold}" / name, tone(300 + 10 * i, seconds=0.5))
        rows.append({"slice_file_name": name, "fsID": 100 + i, "start": 0, "end": 0.5, "salience": 1,
                     "fold": fold, "classID": 8, "class": "siren"})
    (root / "metadata").mkdir()
    pd.DataFrame(rows).to_csv(root / "metadata" / "UrbanSound8K.csv", index=False)
    summary = import_dataset(store, root, progress=False)
    assert summary.layout == "urbansound8k" and summary.unreadable == 0
    splits = store.clips().set_index("fold").split.to_dict()
    assert splits == {"1": "train", "7": "val", "9": "test", "10": "test"}


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "nope", "no such file or folder"),
    (lambda p: (p / "m.csv").write_text("file,other\na.wav,1\n") and p / "m.csv", "needs a label column"),
    (lambda p: (p / "m.csv").write_text("foo,label\na.wav,1\n") and p / "m.csv", "needs a path column"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no audio files"),
])
def test_bad_sources_give_one_clear_message(store, tmp_path, setup, message):
    with pytest.raises(DatasetImportError, match=message):
        import_dataset(store, setup(tmp_path), progress=False)


def test_bad_class_map_is_explained(tmp_path):
    bad = tmp_path / "map.yaml"
    bad.write_text("classes:\n  siren: [not, a, name]\n")
    with pytest.raises(ConfigError, match="bad entries"):
        ClassMap.load(bad)
    bad.write_text("classes: {siren: x}\nunmapped: maybe\n")
    with pytest.raises(ConfigError, match="unmapped must be"):
        ClassMap.load(bad)


def test_cli_import_and_stats_report_in_plain_words(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=6)
    write_corrupt_set(root / "rain")
    session = tmp_path / "session"
    cli = [sys.executable, str(REPO / "app.py")]
    done = subprocess.run(cli + ["import", "--session", str(session), str(root), "--quiet", "--json"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["added"], summary["readable"], summary["unreadable"]) == (23, 18, 5)
    # A re-import adds nothing, and still says the session holds the five bad files (issue 12 §6).
    again = subprocess.run(cli + ["import", "--session", str(session), str(root), "--quiet"],
                           capture_output=True, text=True, cwd=REPO)
    assert "0 readable added, 0 unreadable recorded, 23 already imported" in again.stdout
    assert "the session holds 5 unreadable file(s), kept out of training" in again.stdout
    stats = subprocess.run(cli + ["stats", "--session", str(session), "--unreadable"], capture_output=True, text=True, cwd=REPO)
    assert stats.returncode == 0
    assert "ds/rain/nan_samples.wav: corrupt" in stats.stdout and "unreadable)" in stats.stdout
    bad = subprocess.run(cli + ["import", "--session", str(session), str(tmp_path / "missing")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2
    assert bad.stderr.startswith("earmark: error: nothing to import") and "Traceback" not in bad.stderr


def test_tiny_classes_get_a_grouped_unstratified_split_with_a_warning(store, tmp_path):
    root = tmp_path / "tiny"
    for label in ("a", "b", "c"):
        for i in range(3):
            write_wav(root / label / f"{label}{i}.wav", tone(300 + 50 * i, seconds=0.3))
    summary = import_dataset(store, root, progress=False)
    assert summary.added == 9
    assert any("not stratified" in w for w in summary.warnings)
    assert set(store.clips().split) <= {"train", "val", "test"}


def test_a_symlink_out_of_the_root_is_refused_with_its_target_and_one_inside_is_kept(store, tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=5)
    secret = write_wav(tmp_path / "private" / "secret.wav", tone(440))
    (root / "siren" / "escape.wav").symlink_to(secret)
    (root / "private").symlink_to(secret.parent, target_is_directory=True)  # a class folder on the way out
    (root / "rain" / "alias.wav").symlink_to(root / "rain" / "rec20-0.wav")  # stays inside the root
    summary = import_dataset(store, root, progress=False)

    clips = store.clips().set_index("path")
    for path in ("siren/escape.wav", "private/secret.wav"):
        row = clips.loc[path]
        assert row.status == "unreadable" and pd.isna(row.duration_s), path  # never read
        assert row.reason == (f"outside the dataset root: {path} is a symlink to {secret.resolve()}, "
                              f"not under {root.resolve()}")
    assert clips.loc["rain/alias.wav", "status"] == "ok"
    assert summary.unreadable == 2 and summary.unreadable_reasons == {"outside the dataset root": 2}


def test_a_manifest_row_through_a_symlink_out_of_the_root_is_refused(store, tmp_path):
    secret = write_wav(tmp_path / "private" / "secret.wav", tone(440))
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "link.wav").symlink_to(secret)
    manifest = tmp_path / "ds" / "m.csv"
    pd.DataFrame({"path": ["link.wav", str(tmp_path / "ds" / "link.wav")], "label": ["a", "a"],
                  "duration_s": [1.0, 1.0], "sample_rate_hz": [16000, 16000]}).to_csv(manifest, index=False)
    summary = import_dataset(store, manifest, progress=False)  # trusted metadata: only existence is checked
    assert summary.unreadable == 2
    assert all(r.startswith("outside the dataset root") for r in store.clips().reason)


def test_a_zero_byte_file_is_reported_as_an_empty_file(store, tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=5)
    (root / "beep" / "nothing.wav").write_bytes(b"")
    summary = import_dataset(store, root, progress=False)
    row = store.clips().set_index("path").loc["beep/nothing.wav"]
    assert (row.status, row.reason) == ("unreadable", "empty file (0 bytes)")
    assert summary.unreadable_reasons == {"empty file (0 bytes)": 1}


def test_discovery_reads_no_audio_and_needs_no_session(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", per_class=5)
    found = discover_dataset(root, class_map=ClassMap(mapping={"siren": "emergency_sirens", "beep": "alert_sounds"}))
    assert (found.layout, found.name, found.root) == ("folder", "ds", root.resolve())
    assert (len(found.table), found.dropped_unmapped, found.dropped_classes) == (10, 5, ["rain"])
    assert set(found.table.label) == {"emergency_sirens", "alert_sounds"}
    assert "status" not in found.table.columns  # probing is the import's work
