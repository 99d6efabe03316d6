"""Near-duplicate leakage (issue 17) on a real session: tone-burst clips in WAV files with planted
copies (another gain, a small shift) in other splits and in the same split, imported into a
DuckDB store and searched by the real child job; candidates reach the review queue and are
resolved through the decision log."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import app
from conftest import copy_session
from core import duplicate_review
from core.config import ConfigError
from core.near_duplicates import aligned_similarity, derive_threshold, nearest, normalise, pairs_above
from core.store import Store, StoreError
from duplicates_support import PLANTED, SPLIT_OF, build_duplicates_session, ids_by_name
from pipelines.duplicates import REASON, find_duplicates
from pipelines.review_queue import build_queue


# --- the search's parts ------------------------------------------------------------------------
def test_threshold_lies_between_planted_copies_and_distinct_neighbours(rng):
    copies = rng.uniform(0.95, 1.0, 200)
    neighbours = np.concatenate([rng.uniform(0.2, 0.8, 500), [0.97, 0.99]])  # two real duplicates among them
    found = derive_threshold(copies, neighbours)
    assert 0.8 < found.value < 0.95
    assert found.copy_recall == 1.0 and found.neighbour_share == pytest.approx(2 / 502)
    overlapping = derive_threshold(rng.uniform(0.6, 1.0, 200), rng.uniform(0.2, 0.8, 500))
    assert 0.6 <= overlapping.value <= 0.8 and 0 < overlapping.copy_recall < 1
    with pytest.raises(ValueError, match="needs planted copies and neighbours"):
        derive_threshold([], neighbours)


def test_hnsw_search_finds_what_exact_search_finds_and_pairs_come_once(rng):
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors[2000:2100] = vectors[:100] + 0.05 * rng.standard_normal((100, 32))  # planted: row i + 2000 copies row i
    exact, graph = nearest(vectors, k=5, exact=True), nearest(vectors, k=5, exact=False)
    assert exact.exact and not graph.exact
    assert (exact.indices != np.arange(3000)[:, None]).all()  # nobody is their own neighbour
    agree = np.mean([len(set(e) & set(g)) / 5 for e, g in zip(exact.indices, graph.indices)])
    assert agree > 0.9
    pairs = pairs_above(graph, 0.9)
    assert set(zip(pairs.a, pairs.b)) == {(i, i + 2000) for i in range(100)}
    assert np.allclose(np.linalg.norm(normalise(vectors), axis=1), 1)


def test_aligned_similarity_finds_a_shifted_copy_and_not_another_pattern(rng):
    pattern = rng.standard_normal((16, 60)).astype(np.float32)
    shifted = np.concatenate([rng.standard_normal((16, 3)), pattern[:, :-3]], axis=1) * 2 + 5  # later, louder
    assert aligned_similarity(pattern, shifted, max_lag=4) > 0.9
    assert aligned_similarity(pattern, shifted, max_lag=1) < 0.5  # the lag it needs is not allowed
    assert aligned_similarity(pattern, rng.standard_normal((16, 60)), max_lag=4) < 0.5


# --- the pipeline on a real session ------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, str]:
    """The planted session after one search: (session folder, the search's run id). Copy it to write."""
    session = build_duplicates_session(tmp_path_factory.mktemp("duplicates"))
    with Store.open(session) as store:
        outcome = find_duplicates(store, progress=False)
    assert outcome.status == "succeeded", outcome.lines()
    return session, outcome.run_id


@pytest.fixture
def session(searched, tmp_path) -> Path:
    return copy_session(searched[0], tmp_path / "session")


def test_planted_copies_are_found_and_only_cross_split_ones_are_queued(searched):
    session, run_id = searched
    with Store.open_snapshot(session) as store:
        ids = ids_by_name(store)
        pairs = store.duplicate_pairs(run_id=run_id)
        found = {frozenset((a, b)) for a, b in zip(pairs.clip_a, pairs.clip_b)}
        planted = {frozenset((ids[copy], ids[original])) for copy, (original, _) in PLANTED.items()}
        assert found == planted  # every planted copy, and no distinct clip
        within = pairs[pairs.split_a == pairs.split_b]
        assert {frozenset(p) for p in zip(within.clip_a, within.clip_b)} == {
            frozenset((ids["copy_train_a.wav"], ids["train_12.wav"]))}
        queue = build_queue(store, reason=REASON)
        held_out = {ids[copy] for copy, (_, split) in PLANTED.items() if split != "train"}
        assert set(queue.clip_id) == held_out  # the held-out side of each cross-split pair, once
        row = queue.set_index("clip_id").loc[ids["copy_test_a.wav"]]
        assert row.reason.startswith(f"{REASON}: test clip, similarity 0.9") and row.reason.endswith(
            f"to train clip {ids['train_00.wav']}")
        run = store.run(run_id)
        summary = run["summary"]
        assert run["kind"] == "duplicates" and run["status"] == "succeeded"
        assert summary["test_share_with_train_duplicate"] == pytest.approx(2 / (SPLIT_OF["test"] + 2))
        assert summary["leakage"]["val"] == {"clips": SPLIT_OF["val"] + 1, "with_train": 1, "share": 1 / 9}
        threshold = summary["threshold"]
        assert threshold["copies"] == 40 and threshold["copy_recall"] >= 0.9 and threshold["separation"] >= 0.8
        assert threshold["search"] < min(pairs.similarity) and threshold["check"] < min(pairs.match)


def test_the_three_resolutions_go_through_the_decision_log(session, capsys):
    with Store.open(session) as store:
        ids = ids_by_name(store)
        moved, excluded, distinct = ids["copy_test_a.wav"], ids["copy_test_b.wav"], ids["copy_val_a.wav"]
        partner = duplicate_review.partner(store, moved)
        assert partner["partner_id"] == ids["train_00.wav"] and partner["split"] == "train"

        seen = int(store.clip_state(moved)["last_decision_id"])  # the audit's quarantine decision
        duplicate_review.move_to_partner(store, moved, annotator="ann", seen_decision_id=seen)
        duplicate_review.exclude(store, excluded, annotator="ann")
        duplicate_review.not_duplicate(store, distinct, annotator="ann", note="different takes")
        labels = store.labels().set_index("clip_id")
        assert labels.loc[moved, ["split", "source_group"]].tolist() == ["train", "train_00"]
        assert bool(labels.loc[excluded, "excluded"]) and labels.loc[excluded, "split"] == "test"
        assert labels.loc[distinct, "split"] == "val" and not labels.loc[distinct, "excluded"]
        assert not labels.loc[[moved, excluded, distinct], "quarantined"].any()
        verdict = store.decisions(clip_id=distinct).iloc[0]
        assert verdict.action == "release" and verdict.tag == "not_duplicate"
        assert verdict.note == f"not a duplicate of clip {ids['train_09.wav']}; different takes"
        assert build_queue(store, reason=REASON).empty

    # A second search, through the CLI: the same pairs are found again, but the moved one is now
    # inside train, the excluded one is not searched, and "not a duplicate" stands.
    assert app.main(["duplicates", "--session", str(session), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["status"] == "succeeded" and again["embedding"] == "logmel"
    assert again["pairs"] == 3 and again["cross_split"] == 1 and again["within_split"] == 2
    assert again["queued"] == [] and again["skipped_verdict"] == 1
    assert again["test_share_with_train_duplicate"] == pytest.approx(0.0)
    with Store.open(session) as store:
        store.undo(int(verdict.id), annotator="ann")  # taking the verdict back would raise the pair again
        assert duplicate_review.not_duplicate_pairs(store) == set()


def test_a_clip_without_a_partner_cannot_be_resolved_as_a_duplicate(session):
    with Store.open(session) as store:
        lone = ids_by_name(store)["val_03.wav"]
        assert duplicate_review.partner(store, lone) is None
        with pytest.raises(StoreError, match=f"clip {lone} has no near-duplicate partner"):
            duplicate_review.move_to_partner(store, lone, annotator="ann")


def test_bad_settings_and_runs_are_refused_before_anything_is_made(session):
    with Store.open(session) as store:
        runs_before = len(store.runs())
        with pytest.raises(ConfigError, match="duplicates.copy_gain_db"):
            find_duplicates(store, copy_gain_db=-1)
        with pytest.raises(ConfigError, match="duplicates.embedding"):
            find_duplicates(store, embedding="mfcc")
        with pytest.raises(StoreError, match="no run with id 'nope'"):
            find_duplicates(store, run_id="nope")
        with pytest.raises(StoreError, match="no production model"):
            find_duplicates(store, embedding="model")
        with pytest.raises(ConfigError, match="leave out --run"):
            find_duplicates(store, run_id="nope", embedding="logmel")
        assert len(store.runs()) == runs_before


def test_cli_refuses_bad_input_in_one_line_and_makes_nothing(session, tmp_path, capsys):
    for args, message in [(["--session", str(tmp_path / "none")], "no session at"),
                          (["--session", str(session), "--copy-shift-s", "9"], "duplicates.copy_shift_s"),
                          (["--session", str(session), "--run", "missing-run"], "no run with id 'missing-run'"),
                          (["--session", str(session), "--embedding", "logmel", "--run", "r"], "leave out --run r")]:
        assert app.main(["duplicates", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("earmark: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "none").exists()
    with Store.open_snapshot(session) as store:
        assert len(store.runs(kind="duplicates")) == 1  # the fixture's search only
