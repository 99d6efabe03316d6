"""Issue 6's "done means", on the demo session, through the real parts:

train -> audit (extreme-off + cross-validated label-issue ranking) -> the quarantine queue holds
the proposals (and at least 80% of the planted label errors are among the top 2N) -> tagging
them through core.review relabels as the sirens rules say -> a fine-tune on the corrected labels
-> audit -> the gate report decides promotion -> rollback points production back. The fine-tune is
the Train tab's one click: the default preset, from production, through the workbench's job
manager (train, audit, gates), and its gates pass.

The "annotator" here listens by reading the synthetic clip's true label, which the demo data
carries for scoring (never shown in the UI).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from core import review
from core.audit_child import EXTREME_OFF_FILE
from core.config import list_presets
from core.store import Store
from pipelines import audit as audit_pipeline
from pipelines import promotion
from pipelines.demo import build_demo_session
from pipelines.finetune import finetune
from workbench.job_queue import JobManager
from workbench.train_tab import default_preset

# What a person hears -> the tag they press (A2); road traffic has no tag: they confirm the label.
TAG_FOR = {"emergency_sirens": "true_siren", "alert_sounds": "non_siren_alert", "environmental_sounds": "ambient",
           "collision_sounds": "collision_artifact", "human_scream": "scream_like"}
# 4 folds instead of the default 5 keep the test within budget; on the demo both rank the
# planted errors the same (bench/audit_quality.py). 3 folds train each fold model on a third of
# the pool: the 2N recall still held (2026-12-02) but the queue's precision fell to 0.1.
FOLDS = 4
# The demo's plan (600 clips, 36 planted errors, the same sessions and splits) with 2-5 s clips
# instead of 3-10 s: the clip length is what every training, fold and prediction pays for
# (demo-fast's auto length 5 s instead of 10). The first model runs demo-fast's schedule over 16
# epochs instead of 30 (its validation F1 levels off by epoch 12-15 either way; early stopping
# ended the 30-epoch run at epoch 29). Checked 2026-12-06 against the 3-10 s, 30-epoch run on the
# same plan: recall at 2N 0.806 both (29 of 36), queue precision 0.78 (was 0.76, 37 clips both),
# extreme-off 17 flags (was 14), all planted errors; the sirens-focused fine-tune passes every gate.
CLIP_SECONDS = (2.0, 5.0)
FIRST_MODEL = ["train.epochs=16"]


def heard(truth: dict) -> str | None:
    return "ambiguous_drone" if truth["kind"] == "tonal_drone" else TAG_FOR.get(truth["true_label"])


def siren_accuracy(store: Store, audit_run_id: str) -> float:
    metrics = store.run_metrics(audit_run_id, split="test")
    return float(metrics[(metrics.name == "accuracy") & (metrics.class_label == "emergency_sirens")].value.iloc[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole loop: six trainings (four of them cross-validation folds) and two audits
def test_train_audit_review_finetune_gate_promote_rollback(tmp_path, record_property):
    summary = {}
    with Store.open(tmp_path / "session") as store:
        build_demo_session(session_dir=tmp_path / "session", audio_dir=tmp_path / "audio", progress=False, store=store,
                           duration_range_s=CLIP_SECONDS)
        truth = store.clips().set_index("id").metadata.map(json.loads)
        is_error = truth.map(lambda m: bool(m["label_error"]))

        # 1. A first model on the labels as given.
        first = finetune(store, preset="demo-fast", overrides=FIRST_MODEL, init_from="none", progress=False)
        assert first.status == "succeeded", first.result

        # 2. Audit it, with the cross-validated label-issue ranking.
        audit1 = audit_pipeline.audit(store, run_id=first.run_id, label_issues=True, folds=FOLDS,
                                      progress=False)
        assert audit1.status == "succeeded", audit1.error
        queue = store.quarantine_queue()
        assert set(queue.clip_id) == set(audit1.proposals.clip_id) and queue.quarantined.all()
        assert (queue.audit_run_id == audit1.run_id).all() and queue.reason.str.len().gt(20).all()
        ranked = audit1.proposals[audit1.proposals.method == "self_confidence"].sort_values("rank")
        assert ranked["rank"].is_monotonic_increasing and len(ranked) > 0
        n_errors = int(is_error.sum())  # 36 planted errors, all in the ranked pool (nothing was quarantined yet)
        # The ranking's quality: the first 2N of the whole cross-validated ranking. The queue itself is
        # sized by the estimated noise (fewer than 2N here), so it must be mostly real errors.
        ranking = pd.read_parquet(audit1.run_dir / audit_pipeline.CROSSVAL_DIR / audit_pipeline.LABEL_ISSUES_FILE)
        top = ranking.sort_values("rank").head(2 * n_errors)
        recall = is_error[top.clip_id].sum() / n_errors
        summary["recall_at_2n"] = round(float(recall), 3)
        assert recall >= 0.8, f"top {len(top)} of the ranking hold {recall:.0%} of the {n_errors} planted errors"
        queued_precision = is_error[ranked.clip_id].mean()
        summary["queue_size"], summary["queue_precision"] = len(ranked), round(float(queued_precision), 3)
        assert len(ranked) <= 0.1 * len(ranking) and queued_precision >= 0.6, (len(ranked), queued_precision)
        extreme = pd.read_parquet(audit1.run_dir / EXTREME_OFF_FILE)  # flagged; the queue lists each clip once
        # Extreme-off flags are few and sure: every one is a planted error. How many clear the
        # thresholds moves with the libraries' numerics (10 and more before, 7 with the wheels of
        # 2026-12-01), so the floor is low.
        assert len(extreme) >= 5 and is_error[extreme.clip_id].all()
        summary["siren_test_accuracy_before"] = siren_accuracy(store, audit1.run_id)
        snr = audit1.breakdowns["test"]["snr_db"]["groups"]  # the audit breaks the test split down by SNR
        assert "(none)" in snr and sum(g["n"] for g in snr.values()) == audit1.counts["test"]["evaluated"]
        assert set(store.run_breakdowns(audit1.run_id, split="test").column_name) == {"duration_s", "snr_db"}
        assert any(line.strip().startswith("accuracy by snr_db: ") for line in audit1.lines())

        # 3. The first model's gates fail on the labels as given; it goes to production by override.
        refused = promotion.promote(store, run_id=first.run_id, actor="lead")
        assert not refused.promoted and store.production_run() is None
        assert "accuracy[emergency_sirens]" in refused.report["gates"]["failed"]
        summary["gates_before"] = refused.report["gates"]["failed"]
        with pytest.raises(ValueError, match="an override needs a reason"):
            promotion.promote(store, run_id=first.run_id, actor="lead", override=True)
        forced = promotion.promote(store, run_id=first.run_id, actor="lead", override=True,
                                   reason="baseline before the siren review")
        assert forced.promoted and forced.action == "override" and store.production_run() == first.run_id

        # 4. Listen to every queued clip and tag it; the rules relabel, exclude, keep or release.
        rules = {rule.tag: rule for rule in store.rules()}
        for clip in store.quarantine_queue().itertuples():
            tag = heard(truth[clip.clip_id])
            if tag is None:
                review.relabel(store, clip.clip_id, label=clip.label, annotator="ana", note="confirmed")
                continue
            review.apply_tag(store, clip.clip_id, tag=tag, annotator="ana", seen_decision_id=clip.last_id)
            state, rule = store.clip_state(clip.clip_id), rules[tag]
            decision = store.decisions(clip_id=clip.clip_id).iloc[0]
            assert (decision.tag, decision.rule) == (tag, rule.describe())
            assert state["quarantined"] == rule.keep_quarantined
            assert state["excluded"] == (rule.action == "exclude")
            assert state["label"] == (rule.target_label if rule.action == "relabel" else clip.label)
        open_now = store.quarantine_queue()
        assert (open_now.clip_id.map(truth).map(lambda m: m["kind"]) == "tonal_drone").all()  # only drones stay
        labels = store.labels().set_index("clip_id")
        fixed = labels.index[is_error & (labels.label == truth.map(lambda m: m["true_label"]))]
        assert len(fixed) >= 0.6 * n_errors

        # 5. One click in Train: the default preset (sirens-focused, A5-A7) fine-tunes production on the
        # corrected labels with production's architecture, then the job audits it and its gates pass.
        preset = default_preset(sorted(labels.label.unique()), list_presets())
        manager = JobManager(store)
        second = manager.wait(manager.submit(preset=preset, submitted_by="ana").run_id, timeout_s=1800)
        manager.shutdown()
        assert preset == "sirens-focused" and second.state == "trained, gates passed", "\n".join(second.log)
        assert second.start_line() == f"started from production run {first.run_id}: 26 of 26 tensors copied"
        assert store.run(second.run_id)["parent_run_id"] == first.run_id
        manifest = pd.read_parquet(second.run_dir / "manifest.parquet")
        assert not set(manifest.clip_id) & set(open_now.clip_id)  # drones stay out of training
        audit2 = store.run(second.audit_run_id)["summary"]  # the job's audit, of every split
        drones = labels[labels.excluded]
        assert audit2["counts"]["test"]["excluded"] == int((drones.split == "test").sum())  # left out of the evaluation
        sirens = audit2["key_classes"]["test"]["classes"]["emergency_sirens"]
        assert audit2["key_classes"]["test"]["previous_audit"] == audit1.run_id
        assert sirens["now"] < sirens["previous"]  # fewer extreme-off sirens (A8 step 2)
        summary["siren_test_accuracy_after"] = siren_accuracy(store, second.audit_run_id)

        # 6. The gate report decides: every criterion passes, so it is promoted.
        decided = promotion.promote(store, run_id=second.run_id, actor="lead")
        summary["gates_after"] = decided.report["gates"]["failed"]
        # The decision follows the criteria as written: every one passed, none failed.
        criteria = decided.report["gates"]["criteria"]
        assert decided.promoted == all(c["status"] != "fail" for c in criteria) and not decided.report["gates"]["failed"]
        assert decided.promoted and decided.action == "promote", "\n".join(decided.lines())
        assert store.production_run() == second.run_id
        assert decided.report["production_run_id"] == first.run_id
        gates_dir = second.run_dir / "gates"
        assert json.loads((gates_dir / "gate_report.json").read_text())["passed"] is True
        assert (gates_dir / "confusion_diff.png").stat().st_size > 5000

        # 7. Spot-check relabelled clips; compare the two runs; roll back.
        picked = audit_pipeline.spot_check(store, n=5, seed=0, since_run=first.run_id)
        assert len(picked) == 5 and (picked.label != picked.label_before).all()
        comparison, paths = promotion.compare_runs(store, baseline=first.run_id, candidate=second.run_id)
        assert paths["png"].exists() and comparison["n_clips"] == audit2["counts"]["test"]["evaluated"]
        by_snr = comparison["breakdowns"]["snr_db"]  # both models on the same clips, per SNR bin
        assert sum(g["n"] for g in by_snr.values()) == comparison["n_clips"]
        snr = store.run_breakdowns(second.audit_run_id, split="test").query("column_name == 'snr_db'")
        snr_now = dict(zip(snr.group_name, snr.accuracy))
        assert {name: g["candidate_accuracy"] for name, g in by_snr.items()} == pytest.approx(snr_now)
        assert all(g["accuracy_delta"] == pytest.approx(g["candidate_accuracy"] - g["baseline_accuracy"]) for g in by_snr.values())
        assert promotion.rollback(store, actor="lead", reason="checking rollback") == (second.run_id, first.run_id)
        assert store.production_run() == first.run_id
        history = store.promotions()
        assert history.action.tolist() == ["rollback", "promote", "override"]
        assert history.actor.unique().tolist() == ["lead"]
        assert history.reason.tolist()[-1] == "baseline before the siren review"
    record_property("demo_story", json.dumps(summary))  # pytest --junitxml=FILE shows the numbers
