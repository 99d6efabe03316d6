"""The built-in demo session: synthetic siren-task audio (plan A) imported into sessions/demo.

Idempotent: audio already synthesised with the same seed is reused and clips already imported
are skipped, so `earmark demo` is cheap the second time.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Store, session_exists
from pipelines.demo_synth import DURATION_RANGE_S, synthesize_demo_dataset
from pipelines.importing import ImportSummary, import_dataset

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SESSION = REPO_ROOT / "sessions" / "demo"
DEFAULT_AUDIO = REPO_ROOT / "data" / "demo_audio"
DEMO_DATASET = "demo"
SIRENS_RULES_FILE = rules_file("sirens")  # A3: the sirens plan's tags, as data


@dataclasses.dataclass
class DemoSummary:
    session_dir: Path
    audio_dir: Path
    synth_seconds: float
    imported: ImportSummary

    def lines(self) -> list[str]:
        return [f"demo audio in {self.audio_dir} ({self.synth_seconds:.1f} s)",
                f"session {self.session_dir}", *self.imported.lines()]


def default_audio_dir(*, seed: int, clips_per_class: int,
                      duration_range_s: tuple[float, float] = DURATION_RANGE_S) -> Path:
    """Where demo audio of these parameters lives: each variant has its own folder, so building
    a small demo never rewrites the audio another session was imported from."""
    shortest, longest = (float(v) for v in duration_range_s)
    lengths = "" if (shortest, longest) == DURATION_RANGE_S else f"-{shortest:g}to{longest:g}s"
    if (seed, clips_per_class, lengths) == (0, 100, ""):
        return DEFAULT_AUDIO
    return DEFAULT_AUDIO.with_name(f"{DEFAULT_AUDIO.name}-seed{seed}-n{clips_per_class}{lengths}")


def build_demo_session(*, session_dir: str | Path = DEFAULT_SESSION, audio_dir: str | Path | None = None,
                       seed: int = 0, clips_per_class: int = 100, progress: bool = True,
                       store: Store | None = None,
                       duration_range_s: tuple[float, float] = DURATION_RANGE_S) -> DemoSummary:
    """Synthesise the demo audio (if missing) and import it into the demo session (if missing).

    Pass an open store to build into it (the writer process); otherwise one is opened.
    duration_range_s: the clips' lengths (shorter clips: a quicker demo, as the tests use).
    """
    session_dir = Path(session_dir)
    audio_dir = Path(audio_dir) if audio_dir else default_audio_dir(seed=seed, clips_per_class=clips_per_class,
                                                                    duration_range_s=duration_range_s)
    started = time.perf_counter()
    synthesize_demo_dataset(audio_dir, seed=seed, clips_per_class=clips_per_class, progress=progress,
                            duration_range_s=duration_range_s)
    synth_seconds = time.perf_counter() - started
    own_store = store is None
    store = store or Store.open(session_dir)
    try:
        imported = import_dataset(store, audio_dir / "manifest.csv", layout="manifest", name=DEMO_DATASET,
                                  seed=seed, progress=progress)
        seed_rules(store, load_rules(SIRENS_RULES_FILE))
    finally:
        if own_store:
            store.close()
    return DemoSummary(session_dir=session_dir, audio_dir=audio_dir, synth_seconds=synth_seconds, imported=imported)


def prepare_demo_workbench(*, session_dir: str | Path = DEFAULT_SESSION, progress: bool = True) -> list[str]:
    """What `make demo` needs before the server opens: the demo session, a trained model that is
    in production, and the quarantine queue its audit fills. Each step runs only when missing.
    Returns what was done."""
    from pipelines.audit import audit
    from pipelines.finetune import finetune
    from pipelines.promotion import promote

    done = []
    session_dir = Path(session_dir)
    if not session_exists(session_dir):
        done += build_demo_session(session_dir=session_dir, progress=progress).lines()
    with Store.open(session_dir) as store:
        trained = store.runs(kind="train")
        trained = trained[trained.status == "succeeded"]
        if trained.empty:
            print("training a first model on the demo session (preset demo-fast, about 2 minutes) ...", flush=True)
            outcome = finetune(store, preset="demo-fast", init_from="none", progress=progress)
            done.append(f"trained run {outcome.run_id}: {outcome.status}")
            if outcome.status != "succeeded":
                return done
            model = outcome.run_id
        else:
            model = store.production_run() or trained.id.iloc[0]
        if store.runs(kind="audit").empty:
            print("auditing the model to fill the quarantine queue ...", flush=True)
            done += audit(store, run_id=model, progress=progress).lines()
        if store.production_run() is None:
            # The first model is the baseline later fine-tunes are gated against; against the
            # demo's noisy given labels it cannot pass the siren gate, hence the recorded override.
            promote(store, run_id=model, actor="earmark demo", override=True,
                    reason="first model of the demo session: the baseline to improve on")
            done.append(f"production: {model}")
    return done
