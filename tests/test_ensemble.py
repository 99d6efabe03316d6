"""Ensembles (D5): a CNN and an AST that read different features, combined into one run that is
calibrated, evaluated, audited, gated and promoted like any run, and reloads on its own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import app
from conftest import LENIENT_GATES, copy_session
from core.checkpoint import checkpoint_dir, load_checkpoint
from core.config import ConfigError
from core.features import FeatureCache
from core.store import Store, StoreError
from pipelines import ensemble
from pipelines.finetune import finetune, prepare_finetune
from pipelines.promotion import promote
from workbench import ensemble_panel
from workbench.context import Workbench

pytestmark = pytest.mark.slow

# An AST on other features than the CNN (8 kHz, 1.5 s, 32 bands): the ensemble must feed each its own.
TINY_AST = ["model.name=ast", "model.ast_hidden_size=32", "model.ast_layers=1", "model.ast_heads=2",
            "model.ast_patch_stride=8", "features.sample_rate_hz=8000", "features.max_length_s=1.5", "features.n_mels=32",
            "train.batch_size=16", "train.epochs=1", "train.early_stopping_patience=0", *LENIENT_GATES]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory, trained_demo_session):
    """The trained demo's CNN and a tiny AST, combined 2:1. Never write to it: copy it."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("ensemble") / "session")
    with Store.open(session) as store:
        cnn = store.runs().id.iloc[0]
        ast = finetune(store, preset="demo-fast", overrides=TINY_AST, init_from="none", progress=False)
        assert ast.status == "succeeded", ast.result
        outcome = ensemble.assemble(store, members=[cnn, ast.run_id], weights=[2, 1], progress=False)
        assert outcome.status == "succeeded", outcome.result
    return session, outcome.run_id, [cnn, ast.run_id]


def test_an_ensemble_averages_its_calibrated_members_and_reloads_to_the_same_scores(assembled):
    session, run_id, members = assembled
    with Store.open_snapshot(session) as store:
        run = store.run(run_id)
        stored = store.predictions(run_id).set_index("clip_id")
        own = {m: store.predictions(m).set_index("clip_id") for m in members}
    loaded = load_checkpoint(checkpoint_dir(run["run_dir"]))
    assert run["kind"] == "train" and run["preset"] == "ensemble" and loaded.model_cfg.name == "ensemble"
    assert [m.run_id for m in loaded.model.members] == members and [m.weight for m in loaded.model.members] == [2, 1]
    manifest = pd.read_parquet(Path(run["run_dir"]) / "manifest.parquet")
    cache = FeatureCache(Path(session) / "cache", loaded.feature_cfg)
    waves = torch.from_numpy(cache.take(cache.rows(manifest.path.tolist()))).float()
    with torch.no_grad():
        per_member = [p.numpy() for p in loaded.model.member_probabilities(waves)]
        reloaded = torch.softmax(loaded.model(waves), dim=-1).numpy()
    assert all(m.temperature != 1.0 for m in loaded.model.members)  # calibrated on val (a tiny model is never exactly right)
    assert np.allclose(reloaded, (2 * per_member[0] + per_member[1]) / 3, atol=1e-5)
    assert np.allclose(np.stack(stored.loc[manifest.clip_id, "probs"].map(np.asarray)), reloaded, atol=1e-5)
    for member, probs in zip(members, per_member):
        # Each member sees its own features: its argmax agrees with its own run's predictions
        # (the AST's 8 kHz input is resampled from the ensemble's 16 kHz, hence not to the bit).
        theirs = np.stack(own[member].loc[manifest.clip_id, "probs"].map(np.asarray))  # same class order: same manifest
        assert (probs.argmax(1) == theirs.argmax(1)).mean() >= 0.95
    card = (checkpoint_dir(run["run_dir"]) / "README.md").read_text()
    assert all(m in card for m in members) and "temperature" in card
    table = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())["ensemble"]["members"]
    assert [row["run_id"] for row in table] == members and all(row["temperature"] > 0 for row in table)


def test_the_runs_tab_queues_an_ensemble_that_is_audited_gated_and_promoted_like_any_run(assembled, tmp_path):
    """The workbench's path: the Combine runs panel queues the job, which assembles, audits and
    gates the ensemble as after a fine-tune; it is then promoted, and never fine-tuned."""
    session, _, members = assembled
    bench = Workbench.open(copy_session(session, tmp_path / "session"), with_jobs=True)
    try:
        offered = [run_id for _, run_id in ensemble_panel.member_choices(bench)]
        assert set(members) <= set(offered) and not set(offered) & set(bench.store.runs(kind="train").query(
            "preset == 'ensemble'").id)
        with pytest.raises(ConfigError, match="2 given for 1 members"):
            ensemble_panel.queue_ensemble(bench, None, "ann", members[:1], "2, 1")
        message = ensemble_panel.queue_ensemble(bench, None, "ann", members, "1, 1")
        run_id = bench.store.runs(kind="train").id.iloc[0]
        assert run_id in message and "Train tab" in message
        job = bench.jobs.wait(run_id, timeout_s=600)
        assert job.status == "succeeded" and job.audit_run_id and job.gates_passed is not None, list(job.log)
        assert job.state.startswith("assembled, gates")
        promoted = promote(bench.store, run_id=run_id, actor="tester")
        assert promoted.promoted and bench.store.production_run() == run_id, promoted.lines()
        trained = len(bench.store.runs(kind="train"))
        with pytest.raises(ConfigError, match="ensemble of finished runs.*start from one of its members"):
            prepare_finetune(bench.store, preset="demo-fast")
        assert len(bench.store.runs(kind="train")) == trained  # the refused fine-tune registered nothing
    finally:
        bench.jobs.shutdown()
        bench.store.close()


def test_bad_members_are_refused_in_one_line_before_anything_is_written(assembled, tmp_path, capsys):
    session, run_id, members = assembled
    session = copy_session(session, tmp_path / "session")
    with Store.open(session) as store:
        before = len(store.runs())
        with pytest.raises(ConfigError, match="at least two different runs"):
            ensemble.prepare_ensemble(store, members=[members[0], members[0]])
        with pytest.raises(ConfigError, match="one weight > 0 per member"):
            ensemble.prepare_ensemble(store, members=members, weights=[1, 0])
        with pytest.raises(ConfigError, match="model.name 'ensemble'"):
            ensemble.prepare_ensemble(store, members=[members[0], run_id])
        with pytest.raises(StoreError):
            ensemble.prepare_ensemble(store, members=[members[0], "no-such-run"])
        assert len(store.runs()) == before
    code = app.main(["ensemble", "--session", str(session), "--members", f"{members[0]}:x,{members[1]}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "weight 'x'" in err and "Traceback" not in err


def test_member_lists_take_optional_weights():
    assert ensemble.parse_members("a, b") == (["a", "b"], None)
    assert ensemble.parse_members("a:2,b") == (["a", "b"], [2.0, 1.0])
