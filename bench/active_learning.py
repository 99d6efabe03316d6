"""Does labelling the clips the model is least sure about beat labelling clips at random? (issue 17, A10)

For each dataset and seed, the training split's source groups are cut in two: a labelled share
trains a base model, the rest becomes the unlabelled pool (its labels hidden, as an inbox). Then,
for each budget K, two fine-tunes start from the base model with the same epochs and seed:
- uncertainty: the pool scored by the base model (core/inbox_child.py, the inbox's scoring child)
  and ranked as the inbox ranks it (core/uncertainty.py, probabilities calibrated on the base
  model's val clips), the top K labelled;
- random: K pool clips drawn with the seed.
A labelled pool clip gets its true label (the oracle a person listening would be; the demo's
planted label errors stay in the base share). Each fine-tune is scored on the untouched test
split (true labels where the dataset has them). Reported per dataset and K: the accuracy of each
arm and `uncertainty_minus_random`, mean and standard deviation over the seeds.

Datasets: `demo` (the siren demo at 50 clips per class, 2-5 s clips) and `speech` (the speech
demo's eSpeak NG SPEECH / NONSPEECH clips, 200-1000 ms). Every training is a real child run of
core.train on a frozen manifest; the CNN is the preset's with fewer epochs, so a seed costs minutes.

    python bench/active_learning.py [--datasets demo,speech] [--seeds 0,1,2] [--ks 25,50] [--method least_confident]

The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import train as trainer  # noqa: E402
from core.checkpoint import checkpoint_dir  # noqa: E402
from core.config import load_preset  # noqa: E402
from core.evaluate import apply_temperature  # noqa: E402
from core.inbox_child import ScoreJob  # noqa: E402
from core.model_trust import held_out_calibration  # noqa: E402
from core.run_folder import CONFIG_FILE, MANIFEST_FILE, PREDICTIONS_FILE  # noqa: E402
from core.store import UNLABELLED_SPLIT, Store  # noqa: E402
from core.uncertainty import rank_uncertain  # noqa: E402
from pipelines.child_process import run_child  # noqa: E402
from pipelines.demo import build_demo_session  # noqa: E402
from pipelines.finetune import freeze_manifest, inherit_architecture  # noqa: E402
from pipelines.speech_demo import build_speech_demo_session  # noqa: E402

DATASETS = {
    # preset, overrides of the base training, epochs of each fine-tune
    "demo": ("demo-fast", ["train.epochs=6", "train.early_stopping_patience=0"], 3),
    # Without its on-the-fly augmentations (they cost more than the small model's step): both arms alike.
    "speech": ("speech-cnn", ["augment=[]", "train.epochs=6", "train.early_stopping_patience=0"], 3),
}


def build(dataset: str, folder: Path) -> Path:
    session = folder / "session"
    if dataset == "demo":
        build_demo_session(session_dir=session, clips_per_class=50, duration_range_s=(2.0, 5.0), progress=False)
    else:  # the audio is synthesised once into the default folder (data/, gitignored) and reused
        build_speech_demo_session(session_dir=session, progress=False)
    return session


def cut_pool(manifest: pd.DataFrame, *, labelled_share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(base manifest, pool): the train split's source groups in a seeded order, the first
    labelled_share of them labelled, the rest hidden as the pool; val and test untouched."""
    groups = manifest.loc[manifest.split == "train", "source_group"].unique()
    order = np.random.default_rng(seed).permutation(groups)
    pooled = set(order[int(round(labelled_share * len(order))):])
    in_pool = (manifest.split == "train") & manifest.source_group.isin(pooled)
    return manifest[~in_pool].reset_index(drop=True), manifest[in_pool].reset_index(drop=True)


def train(manifest: pd.DataFrame, run_dir: Path, *, preset: str, overrides: list[str], labels: list[str],
          session: Path, init: str | None = None) -> dict:
    """One real training child on a frozen manifest; its result.json."""
    run_dir.mkdir(parents=True)
    config = load_preset(preset, overrides, session_dir=session)
    if init is not None:  # a fine-tune keeps the start model's architecture and resolved features, as the loop does
        config, _ = inherit_architecture(config, init, start="the base model", explicit=[])
    config.save(run_dir / CONFIG_FILE)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    trainer.Job(run_id=run_dir.name, labels=labels, cache_dir=str(session / "cache"), init_checkpoint=init).save(run_dir)
    result = run_child(run_dir, module="core.train", desc=run_dir.name, progress=False)
    if result["status"] != "succeeded":
        raise RuntimeError(f"{run_dir.name}: {result.get('error')}")
    return result


def test_accuracy(result: dict) -> float:
    return float(result.get("accuracy_true", result["accuracy"])["test"])


def uncertain_order(pool: pd.DataFrame, base_dir: Path, *, session: Path, method: str) -> list[int]:
    """The pool's clip ids ranked as the inbox ranks them: scored by the inbox's child job with the
    base model, calibrated on the base model's val predictions."""
    run_dir = base_dir.parent / f"{base_dir.name}-score"
    run_dir.mkdir()
    pool.assign(label=pd.Series([None] * len(pool), dtype="string"), split=UNLABELLED_SPLIT)[
        ["clip_id", "path", "label", "split"]].to_parquet(run_dir / MANIFEST_FILE)
    ScoreJob(run_id=run_dir.name, model_run_id=base_dir.name, checkpoint=str(checkpoint_dir(base_dir)),
             cache_dir=str(session / "cache"), frozen_at_decision=0).save(run_dir)
    result = run_child(run_dir, module="core.inbox_child", desc="scoring", progress=False)
    classes = result["labels"]
    scored = pd.read_parquet(run_dir / PREDICTIONS_FILE)
    val = pd.read_parquet(base_dir / PREDICTIONS_FILE).query("split == 'val'")
    temperature = held_out_calibration(labels=val.label.map({c: i for i, c in enumerate(classes)}).to_numpy(),
                                       pred_probs=np.stack(val.probs.to_numpy()))["temperature"]
    probs = apply_temperature(probs=np.stack(scored.probs.to_numpy()), temperature=temperature)
    ranking = rank_uncertain(probs, classes=classes, method=method)
    return scored.clip_id.to_numpy()[ranking.position.to_numpy()].tolist()


def labelled(pool: pd.DataFrame, clip_ids: list[int], *, classes: list[str]) -> pd.DataFrame:
    """The chosen pool clips with their true labels (the oracle), in the train split. A clip whose
    truth is no class of the task (the speech demo's 'mixed' and 'silence' faults) is one a person
    would exclude: it costs its place in the budget and adds nothing."""
    chosen = pool.set_index("clip_id").loc[clip_ids].reset_index()
    truth = chosen["true_label"].where(chosen["true_label"].notna(), chosen["label"]) if "true_label" in chosen \
        else chosen["label"]
    chosen = chosen.assign(label=truth.astype(str), original_label=truth.astype(str))
    return chosen[chosen.label.isin(classes)]


def run_dataset(dataset: str, *, seeds: list[int], ks: list[int], method: str, labelled_share: float,
                folder: Path) -> dict:
    preset, base_overrides, fine_epochs = DATASETS[dataset]
    session = build(dataset, folder)
    with Store.open(session) as store:
        manifest, _ = freeze_manifest(store)
    labels = sorted(manifest.label.unique())
    rows = []
    for seed in seeds:
        started = time.perf_counter()
        base, pool = cut_pool(manifest, labelled_share=labelled_share, seed=seed)
        seeded = [f"train.seed={seed}"]
        runs = folder / f"seed{seed}"
        base_dir = runs / "base"
        base_result = train(base, base_dir, preset=preset, overrides=base_overrides + seeded, labels=labels,
                            session=session)
        ranked = uncertain_order(pool, base_dir, session=session, method=method)
        shuffled = np.random.default_rng(1000 + seed).permutation(pool.clip_id.to_numpy()).tolist()
        fine = [*base_overrides, f"train.epochs={fine_epochs}", *seeded]
        for k in ks:
            scores = {}
            for arm, order in (("uncertainty", ranked), ("random", shuffled)):
                grown = pd.concat([base, labelled(pool, order[:k], classes=labels)], ignore_index=True)
                result = train(grown, runs / f"{arm}-k{k}", preset=preset, overrides=fine, labels=labels,
                               session=session, init=str(checkpoint_dir(base_dir)))
                scores[arm] = test_accuracy(result)
            rows.append({"seed": seed, "k": k, "base": test_accuracy(base_result), **scores,
                         "uncertainty_minus_random": scores["uncertainty"] - scores["random"]})
            print(f"{dataset} seed {seed} K={k}: base {rows[-1]['base']:.4f}  uncertainty {scores['uncertainty']:.4f}  "
                  f"random {scores['random']:.4f}", flush=True)
        print(f"{dataset} seed {seed}: {time.perf_counter() - started:.0f} s (pool {len(pool)} clips, "
              f"labelled base {int((base.split == 'train').sum())})", flush=True)
    frame = pd.DataFrame(rows)
    summary = {"clips": len(manifest), "pool": int(len(pool)), "method": method, "seeds": seeds}
    for k, part in frame.groupby("k"):
        delta = part.uncertainty_minus_random
        summary[f"k{k}"] = {"uncertainty_minus_random": {"mean": round(float(delta.mean()), 4),
                                                          "std": round(float(delta.std(ddof=1)), 4) if len(part) > 1 else None,
                                                          "per_seed": [round(float(v), 4) for v in delta]},
                            "uncertainty": round(float(part.uncertainty.mean()), 4),
                            "random": round(float(part.random.mean()), 4), "base": round(float(part.base.mean()), 4)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="demo,speech")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ks", default="25,50")
    parser.add_argument("--method", default="least_confident")
    parser.add_argument("--labelled-share", type=float, default=0.4,
                        help="share of the train split's source groups labelled for the base model (the rest is the pool)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    report: dict = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="earmark-al-") as tmp:
        for dataset in args.datasets.split(","):
            report[dataset] = run_dataset(dataset, seeds=seeds, ks=ks, method=args.method,
                                          labelled_share=args.labelled_share, folder=Path(tmp) / dataset)
    first = report[next(iter(report))]
    print(json.dumps({"uncertainty_minus_random": {f"k{k}": first[f"k{k}"]["uncertainty_minus_random"] for k in ks},
                      "datasets": report, "seconds": round(time.perf_counter() - started)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
