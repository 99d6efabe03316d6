"""How much the consensus and the annotator quality of blind double annotation can be trusted
(issue 17), on two datasets whose true labels are known to the bench only: the siren demo and
the speech / non-speech demo (its eSpeak NG voices, music and noise), each with a demo-fast
(siren) or speech-cnn model trained briefly and promoted to production.

Three simulated annotators of known accuracy (ACCURACY; a wrong answer is another class, drawn
uniformly) answer the test split blind through pipelines.double_annotation, two per clip in
turn, so each pair shares a third of the clips. Reported per dataset:
- agreement: the report's overall Krippendorff's alpha and each pair's Cohen's kappa (context,
  not a pass mark: they fall with the weaker annotator's accuracy);
- disagreements: how often the adjudication queue's consensus suggestion (cleanlab CROWDLAB
  with the production model) is the true class, against the production model alone and a
  coin flip between the two answers; without a model cleanlab leaves every such tie open;
- annotator quality: whether CROWDLAB (with the model) and agreement-only (without) rank the
  three annotators in their true order.
The last line printed is one JSON object.

    python bench/double_annotation.py [--parts siren,speech] [--epochs 3]
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

from core.store import Store  # noqa: E402
from pipelines import double_annotation as double  # noqa: E402
from pipelines.demo import build_demo_session  # noqa: E402
from pipelines.finetune import finetune  # noqa: E402
from pipelines.speech_demo import build_speech_demo_session  # noqa: E402

ACCURACY = {"ann_a": 0.95, "ann_b": 0.85, "ann_c": 0.65}
PAIRS = [("ann_a", "ann_b"), ("ann_b", "ann_c"), ("ann_a", "ann_c")]
PARTS = {"siren": "demo-fast", "speech": "speech-cnn"}


def build(part: str, folder: Path, store: Store) -> None:
    if part == "siren":
        build_demo_session(session_dir=folder, audio_dir=folder.parent / "siren-audio", progress=False, store=store)
    else:
        build_speech_demo_session(session_dir=folder, audio_dir=folder.parent / "speech-audio", progress=False,
                                  store=store)


def simulate(store: Store, clips: pd.DataFrame, classes: list[str], rng: np.random.Generator) -> None:
    """Each clip answered blind by one pair in turn; each answer right with its annotator's accuracy."""
    double.set_annotators_per_clip(store, queue="quarantine", annotators=2, actor="bench")
    for i, clip in enumerate(clips.itertuples()):
        for name in PAIRS[i % len(PAIRS)]:
            right = rng.random() < ACCURACY[name]
            answer = clip.truth if right else rng.choice([c for c in classes if c != clip.truth])
            double.annotate(store, int(clip.clip_id), queue="quarantine", annotator=name, action="relabel",
                            label=str(answer))


def figures(store: Store, clips: pd.DataFrame, run_id: str, rng: np.random.Generator) -> dict:
    """The disagreement and quality figures described in the module docstring."""
    queue = double.adjudication_queue(store, status="open").set_index("clip_id")
    truth = clips.set_index("clip_id").truth
    predicted = store.predictions(run_id).set_index("clip_id").predicted
    suggested = queue.reason.str.extract(r"consensus: ([^ ]+) \(")[0]
    answers = queue.reason.str.findall(r"ann_\w: ([^ ·]+)")
    coin = answers.map(lambda pair: pair[int(rng.integers(len(pair)))])
    report = double.agreement_report(store)
    with_model = report.annotators.set_index("annotator").quality
    order = sorted(ACCURACY, key=ACCURACY.get, reverse=True)
    return {"clips": len(clips), "disagreements": len(queue),
            "consensus_right": round(float((suggested == truth[queue.index]).mean()), 3),
            "model_right": round(float((predicted[queue.index] == truth[queue.index]).mean()), 3),
            "coin_flip_right": round(float((coin == truth[queue.index]).mean()), 3),
            "alpha": round(float(report.table.set_index("class").alpha.iloc[0]), 3),
            "pair_kappa": {f"{r.a}/{r.b}": round(float(r.kappa), 3) for r in report.pairs.itertuples()},
            "quality_with_model": {k: round(float(v), 3) for k, v in with_model.items()},
            "ranked_right_with_model": list(with_model.sort_values(ascending=False).index) == order}


def without_model(store: Store) -> dict:
    """The same report with production pointed at no run: cleanlab's agreement-only fallback."""
    store.record_promotion(None, action="rollback", actor="bench", reason="bench: consensus without a model")
    report = double.agreement_report(store)
    quality = report.annotators.set_index("annotator").quality
    open_ties = double.adjudication_queue(store, status="open").reason.str.contains("consensus: tie").mean()
    order = sorted(ACCURACY, key=ACCURACY.get, reverse=True)
    return {"method": report.consensus_method, "quality": {k: round(float(v), 3) for k, v in quality.items()},
            "ranked_right": list(quality.sort_values(ascending=False).index) == order,
            "ties_left_open": round(float(open_ties), 3)}


def run_part(part: str, scratch: Path, *, epochs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    folder = scratch / part
    started = time.perf_counter()
    with Store.open(folder) as store:
        build(part, folder, store)
        trained = finetune(store, preset=PARTS[part], overrides=[f"train.epochs={epochs}"], init_from="none",
                           progress=False)
        if trained.status != "succeeded":
            raise SystemExit(f"{part}: training {trained.status}")
        store.record_promotion(trained.run_id, action="promote", actor="bench")
        train_s = time.perf_counter() - started
        predictions = store.predictions(trained.run_id)
        meta = store.clips().set_index("id").metadata.map(json.loads)
        clips = predictions[predictions.split == "test"][["clip_id"]].copy()
        clips["truth"] = clips.clip_id.map(lambda c: meta[c]["true_label"])
        classes = sorted(clips.truth.unique())
        simulate(store, clips, classes, rng)
        result = figures(store, clips, trained.run_id, rng) | {"without_model": without_model(store)}
    result["seconds"] = {"build_and_train": round(train_s, 1), "total": round(time.perf_counter() - started, 1)}
    print(f"{part}: {result['clips']} test clips, {result['disagreements']} disagreements; consensus right "
          f"{result['consensus_right']:.3f}, model alone {result['model_right']:.3f}, coin flip "
          f"{result['coin_flip_right']:.3f}; alpha {result['alpha']:.3f}; quality ranks the annotators right: "
          f"with model {result['ranked_right_with_model']}, without {result['without_model']['ranked_right']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="siren,speech")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="earmark-double-bench-") as scratch:
        results = {part: run_part(part, Path(scratch), epochs=args.epochs, seed=args.seed)
                   for part in args.parts.split(",")}
    print(json.dumps({"accuracy": ACCURACY, **results}))


if __name__ == "__main__":
    main()
