"""Confusion cells, stale marks and metric deltas from a real store with planted runs."""
from __future__ import annotations

import pandas as pd
import pytest

from core import review
from core.store import Store
from pipelines.confusions import CELL_COLUMNS, class_metrics, confusion, overall_metrics

LABELS = ["alert", "siren"]


@pytest.fixture
def store(tmp_path):
    """Six clips (test split unless noted) and two runs over them; 'old' is production."""
    with Store.open(tmp_path / "session") as s:
        dataset = s.add_dataset(name="d", root=tmp_path, layout="folder")
        s.add_clips(dataset, pd.DataFrame({
            "path": [f"c{i}.wav" for i in range(6)], "status": "ok",
            "split": ["test", "test", "test", "test", "test", "val"],
            "original_label": ["siren", "siren", "siren", "alert", "alert", "siren"]}))
        ids = s.clips().id.tolist()
        # new run: clips 0,1 right; clips 2 (0.9) and 5 (val) siren -> alert; 3 right; 4 alert -> siren.
        add_run(s, "new", ids, predicted=["siren", "siren", "alert", "alert", "siren", "alert"],
                confidence=[0.8, 0.7, 0.9, 0.6, 0.55, 0.95],
                metrics={("accuracy", None): 0.6, ("f1", "siren"): 0.8, ("f1", "alert"): 0.5, ("support", "siren"): 3,
                         ("support", "alert"): 2})
        add_run(s, "old", ids, predicted=["siren"] * 6, confidence=[0.5] * 6,
                metrics={("accuracy", None): 0.6, ("f1", "siren"): 0.75, ("f1", "alert"): 0.0, ("support", "siren"): 3,
                         ("support", "alert"): 2})
        s.record_promotion("old", action="promote", actor="test")
        yield s


def add_run(store: Store, run_id: str, ids: list[int], *, predicted: list[str], confidence: list[float],
            metrics: dict[tuple[str, str | None], float]) -> None:
    state = store.labels()
    store.create_run(run_id, kind="train", preset="demo-fast", config=None, parent_run_id=None,
                     manifest_decision_id=store.last_decision_id(), run_dir=store.session_dir / run_id, status="succeeded")
    store.ingest_run_results(run_id, predictions=pd.DataFrame({
        "clip_id": ids, "split": state.split, "label": state.label, "predicted": predicted, "confidence": confidence,
        "probs": [[1 - c, c] for c in confidence]}), metrics=pd.DataFrame(
        [("test", name, label, value) for (name, label), value in metrics.items()],
        columns=["split", "name", "class_label", "value"]))


def test_counts_rows_are_true_columns_predicted_on_one_split(store):
    conf = confusion(store, "new", split="test")
    assert conf.labels == LABELS
    assert conf.counts.index.name == "true" and conf.counts.columns.name == "predicted"
    assert conf.counts.loc["siren"].tolist() == [1, 2]  # siren called alert once, siren twice
    assert conf.counts.loc["alert"].tolist() == [1, 1]
    assert conf.normalized.loc["siren"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert confusion(store, "new", split="all").counts.loc["siren", "alert"] == 2


def test_a_cell_lists_its_clips_most_confident_first(store):
    ids = store.clips().id.tolist()
    cell = confusion(store, "new", split="test").cell("siren", "siren")
    assert list(cell.columns) == CELL_COLUMNS
    assert cell.clip_id.tolist() == [ids[0], ids[1]] and cell.confidence.tolist() == [0.8, 0.7]
    with pytest.raises(ValueError, match="'drone' is not a class of run new; classes: alert, siren"):
        confusion(store, "new").cell("drone", "siren")


def test_cells_become_stale_when_their_clips_are_relabelled_or_excluded_after_the_run(store):
    ids = store.clips().id.tolist()
    assert confusion(store, "new").stale.to_numpy().sum() == 0
    review.relabel(store, ids[2], label="alert", annotator="ana")
    review.exclude(store, ids[3], annotator="ana")
    review.send_to_quarantine(store, ids[0], reason="listen again", annotator="ana")  # not a label change
    conf = confusion(store, "new")
    assert conf.stale.loc["siren", "alert"] == 1 and conf.stale.loc["alert", "alert"] == 1
    assert conf.stale.to_numpy().sum() == 2
    cell = conf.cell("siren", "alert")
    assert cell.loc[0, ["label at run", "label now", "stale"]].tolist() == ["siren", "alert", "relabelled since run"]
    assert conf.cell("alert", "alert").loc[0, "label now"] == "(excluded)"


def test_metrics_carry_deltas_against_the_production_run(store):
    table = class_metrics(store, "new", split="test", baseline_run_id=store.production_run()).set_index("class")
    assert table.at["alert", "F1"] == 0.5 and table.at["alert", "Δ F1"] == 0.5
    assert table.at["siren", "Δ F1"] == pytest.approx(0.05)
    assert "Δ support" not in table.columns and table.at["siren", "support"] == 3
    alone = class_metrics(store, "old", split="test", baseline_run_id="old")
    assert not any(c.startswith("Δ") for c in alone.columns)
    assert class_metrics(store, "new", split="val", baseline_run_id="old").empty
    assert overall_metrics(store, "new", split="test", baseline_run_id="old")["accuracy"] == (0.6, 0.0)


def test_a_run_without_predictions_or_a_bad_split_is_refused(store):
    store.create_run("broken", kind="train", preset=None, config=None, parent_run_id=None, manifest_decision_id=0,
                     run_dir=store.session_dir, status="failed")
    with pytest.raises(ValueError, match="run broken has no predictions"):
        confusion(store, "broken")
    with pytest.raises(ValueError, match="split must be one of test, val, train, all, got 'dev'"):
        confusion(store, "new", split="dev")
