"""The corrected-manifest export against a real session store and real files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import tone, write_wav
from core import review
from core.store import Rule, Store
from pipelines.export import COLUMNS, default_export_path, export_manifest, manifest_table
from pipelines.importing import import_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    """Ten clips of a folder dataset (two classes, five each) and one unreadable file, with a tag rule."""
    root = tmp_path / "ds"
    for label, freq in (("siren", 900), ("beep", 600)):
        for i in range(5):
            write_wav(root / label / f"{label}{i}.wav", tone(freq + i, seconds=0.5))
    (root / "beep" / "broken.wav").write_text("not audio")
    with Store.open(tmp_path / "session") as s:
        import_dataset(s, root, progress=False)
        s.set_rule(Rule("drone", "exclude", None, True, "ambiguous", "6"))
        yield s


def clip_id(store: Store, name: str) -> int:
    clips = store.clips()
    return int(clips.loc[clips.path.str.endswith(name), "id"].iloc[0])


def read(path: Path) -> pd.DataFrame:
    return (pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)).set_index("clip_id")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_has_current_labels_exclusions_and_provenance(store, fmt):
    siren0, siren1, beep0 = clip_id(store, "siren0.wav"), clip_id(store, "siren1.wav"), clip_id(store, "beep0.wav")
    relabel = review.relabel(store, siren0, label="beep", annotator="ana", note="it is a beep")
    drone = review.apply_tag(store, siren1, tag="drone", annotator="bo")
    wrong = review.relabel(store, beep0, label="siren", annotator="ana")
    undo = review.undo(store, wrong, annotator="ana")

    summary = export_manifest(store, default_export_path(store, format=fmt), format=fmt)
    table = read(summary.path)

    assert summary.path == store.session_dir / "exports" / f"manifest-asof-{undo}.{fmt}"
    assert list(table.reset_index().columns) == COLUMNS
    assert (summary.rows, summary.as_of_decision_id) == (11, undo)
    assert (summary.relabelled, summary.excluded, summary.quarantined, summary.unreadable) == (1, 1, 1, 1)
    assert (table.as_of_decision_id == undo).all()

    row = table.loc[siren0]
    assert (row.label, row.original_label, bool(row.relabelled), bool(row.excluded)) == ("beep", "siren", True, False)
    assert (row.last_decision_id, row.last_annotator, row.last_action) == (relabel, "ana", "relabel")
    assert Path(row.path) == store.dataset_roots()[1] / "siren" / "siren0.wav"
    assert row.path.startswith("/")

    row = table.loc[siren1]
    assert (row.label, bool(row.excluded), bool(row.quarantined)) == ("siren", True, True)
    assert (row.last_decision_id, row.last_action, row.last_tag) == (drone, "tag", "drone")
    assert row.last_rule == "drone -> exclude, keep quarantined"

    row = table.loc[beep0]  # relabelled then undone: back to its own label, no effective decision left
    assert (row.label, bool(row.relabelled)) == ("beep", False)
    assert pd.isna(row.last_decision_id) and pd.isna(row.last_annotator)

    broken = table.loc[clip_id(store, "broken.wav")]
    assert broken.status == "unreadable" and isinstance(broken.reason, str) and broken.reason


def test_export_as_of_an_older_decision_rebuilds_the_labels_then(store):
    siren0 = clip_id(store, "siren0.wav")
    before = store.last_decision_id()
    review.relabel(store, siren0, label="beep", annotator="ana")
    then = manifest_table(store, as_of=before).set_index("clip_id")
    now = manifest_table(store, as_of=store.last_decision_id()).set_index("clip_id")
    assert then.at[siren0, "label"] == "siren" and not then.at[siren0, "relabelled"]
    assert now.at[siren0, "label"] == "beep" and now.at[siren0, "relabelled"]


def test_an_export_imports_back_as_a_manifest_with_the_corrected_labels(store, tmp_path):
    siren0 = clip_id(store, "siren0.wav")
    review.relabel(store, siren0, label="beep", annotator="ana")
    summary = export_manifest(store, tmp_path / "corrected.csv")
    exported = read(summary.path)
    with Store.open(tmp_path / "other") as other:
        imported = import_dataset(other, summary.path, layout="manifest", progress=False)
        labels = other.labels()
    assert imported.added == 11 and imported.unreadable == 1
    relabelled = labels[labels.path.str.endswith("siren0.wav")].iloc[0]
    assert relabelled.original_label == "beep"
    assert sorted(labels.split.dropna()) == sorted(exported.split.dropna())


def test_bad_format_and_as_of_are_refused_with_the_value(store, tmp_path):
    with pytest.raises(ValueError, match="format must be one of csv, parquet, got 'xlsx'"):
        export_manifest(store, tmp_path / "m.csv", format="xlsx")
    with pytest.raises(ValueError, match=r"cannot tell it from 'm\.txt'"):
        export_manifest(store, tmp_path / "m.txt")
    with pytest.raises(ValueError, match=r"decision id 999 is outside this session's log \(0\.\.\d+\)"):
        export_manifest(store, tmp_path / "m.csv", as_of=999)
    assert not list(tmp_path.glob("m.*")) and not list(tmp_path.glob(".m.*"))


def test_cli_export_writes_the_file_and_errors_in_one_line(store, tmp_path):
    session = store.session_dir
    store.close()
    out = tmp_path / "out.parquet"
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "export", "--session", str(session), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 11 clips as of decision" in done.stdout and str(out) in done.stdout
    assert len(pd.read_parquet(out)) == 11
    failed = subprocess.run([sys.executable, str(REPO / "app.py"), "export", "--session", str(session), "--as-of", "999"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and failed.stderr.startswith("earmark: error: as_of: decision id 999")
