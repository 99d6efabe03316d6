"""Review in a real browser: from a decision key to the next clip's spectrogram on screen.

Runs the real workbench server on a small demo session built in a temp folder (tiny training,
a quarantine queue of the clips it is least sure of), drives Debian's chromium through N
decisions by key at an annotator's pace, and measures each key press from its capture-phase
keydown timestamp to the first animation frame that shows the next clip's decoded spectrogram
(and, apart, until its audio can play). The baseline is K (previous clip), which waits for the
server. Afterwards the session's log must hold every decision, in order, each on the clip that
was on screen when its key was pressed.

Goal (issue 11 part 5): p95 <= 100 ms.

    python bench/review_browser.py [--decisions 30] [--pace-s 0.4] [--session DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from core.store import Store  # noqa: E402
from pipelines.demo import build_demo_session  # noqa: E402
from pipelines.finetune import finetune  # noqa: E402
from ui_support import browser_page, running_server, set_annotator  # noqa: E402

ANNOTATOR = "bench"
KEYS = "12345"  # the demo's relabel rules: each releases the clip, so the queue moves on
# In the page: a capture-phase keydown starts a requestAnimationFrame poll that stops on the
# first frame showing another clip's decoded spectrogram; a second poll waits for its audio.
PROBE_JS = """() => {
  window.emBench = [];
  const shown = () => Array.from(document.querySelectorAll('#em-review-stage .em-player')).find(p => p.offsetParent !== null);
  document.addEventListener('keydown', (event) => {
    const from = shown();
    const record = {key: event.key, t0: event.timeStamp, from: from ? Number(from.dataset.clip) : null};
    window.emBench.push(record);
    const poll = () => {
      const player = shown();
      const img = player && player.querySelector('.em-spec-img');
      if (!record.shown && player && Number(player.dataset.clip) !== record.from && img && img.complete && img.naturalWidth > 0) {
        record.shown = performance.now(); record.to = Number(player.dataset.clip);
      }
      const audio = record.shown && player && player.querySelector('.em-audio');
      if (audio && audio.readyState >= 3) record.audio = performance.now();
      if (!record.audio && performance.now() - record.t0 < 10000) requestAnimationFrame(poll);
    };
    requestAnimationFrame(poll);
  }, true);
}"""


def build_session(folder: Path, *, queue_size: int) -> Path:
    """A demo session with a tiny trained run and a quarantine queue of its least sure clips."""
    session = folder / "session"
    build_demo_session(session_dir=session, audio_dir=folder / "audio", clips_per_class=16, progress=False)
    with Store.open(session) as store:
        run = finetune(store, preset="demo-fast", overrides=["train.epochs=1", "model.cnn_channels=[8, 16, 16, 16]"],
                       init_from="none", progress=False).run_id
        picked = store.predictions(run).sort_values("confidence").head(queue_size)
        store.raise_quarantine(pd.DataFrame({"clip_id": picked.clip_id, "method": "extreme_off", "audit_run_id": run,
                                             "reason": "given " + picked.label + ", model says " + picked.predicted,
                                             "score": 1 - picked.confidence}), annotator="audit")
    return session


def press_and_wait(page, key: str) -> dict:
    """Press one key; return the probe's record once the next clip (and its audio) is shown."""
    count = page.evaluate("window.emBench.length")
    page.keyboard.press(key)
    page.wait_for_function(f"window.emBench.length > {count} && window.emBench[{count}].audio", timeout=30000)
    return page.evaluate(f"window.emBench[{count}]")


def percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def drive(session: Path, *, decisions: int, pace_s: float, baseline: int) -> tuple[list[dict], list[dict]]:
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        page.wait_for_selector("#em-review-stage .em-player", timeout=60000)
        set_annotator(page, ANNOTATOR)
        page.locator("body").click(position={"x": 5, "y": 5})
        page.evaluate(PROBE_JS)
        page.wait_for_timeout(1000)  # the first window's audio and images settle, as they would while listening
        decided = []
        for i in range(decisions):
            decided.append(press_and_wait(page, KEYS[i % len(KEYS)]))
            page.wait_for_timeout(int(pace_s * 1000))
        previous = [press_and_wait(page, "k") for _ in range(baseline)]
        page.wait_for_function("window.emReview.pending.length === 0 && !window.emReview.inflight", timeout=30000)
        if errors:
            print("console errors:", *errors, sep="\n  ")
    return decided, previous


def check_log(session: Path, decided: list[dict]) -> int:
    """Every key press recorded once, in order, on the clip shown when it was pressed."""
    with Store.open(session) as store:
        log = store.decisions(annotator=ANNOTATOR).sort_values("id")
    expected = [record["from"] for record in decided]
    recorded = log[log.action == "tag"].clip_id.astype(int).tolist()
    if recorded != expected:
        raise SystemExit(f"the log does not match the key presses: pressed on {expected}, recorded on {recorded}")
    return len(recorded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--pace-s", type=float, default=0.4, help="pause after each clip is shown, as an annotator listens")
    parser.add_argument("--baseline", type=int, default=10, help="K presses (previous clip: waits for the server)")
    parser.add_argument("--session", help="a session made by this script before (copied, never changed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.session:
            session = Path(tmp) / "session"
            shutil.copytree(args.session, session)
        else:
            session = build_session(Path(tmp), queue_size=args.decisions + 5)
        decided, previous = drive(session, decisions=args.decisions, pace_s=args.pace_s, baseline=args.baseline)
        recorded = check_log(session, decided)
    shown = [r["shown"] - r["t0"] for r in decided]
    audio = [r["audio"] - r["t0"] for r in decided]
    back = [r["shown"] - r["t0"] for r in previous]
    p50, p95 = percentiles(shown)
    audio_p50, audio_p95 = percentiles(audio)
    back_p50, back_p95 = percentiles(back)
    print(f"{len(decided)} decisions by key, {args.pace_s} s apart; {recorded} recorded, in order, on the clips shown")
    print(f"key -> next spectrogram shown   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   (goal p95 <= 100 ms)")
    print(f"key -> next clip's audio ready  p50 {audio_p50:6.1f} ms   p95 {audio_p95:6.1f} ms")
    print(f"K (previous clip, waits for the server) p50 {back_p50:6.1f} ms   p95 {back_p95:6.1f} ms")
    print(json.dumps({"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "audio_p50_ms": round(audio_p50, 1),
                      "audio_p95_ms": round(audio_p95, 1), "baseline_prev_p50_ms": round(back_p50, 1),
                      "baseline_prev_p95_ms": round(back_p95, 1), "decisions": len(decided), "recorded": recorded}))


if __name__ == "__main__":
    main()
