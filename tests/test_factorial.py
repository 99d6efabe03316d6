"""The factorial builder (B7): exact SNR on the written files, splits without leakage, metadata the
breakdowns cover, idempotence, the one-line refusals, and the CLI in-process.

The smallest data that tests each thing: 2 durations x 2 SNRs x 3 clips per cell, from five
eSpeak speakers (two files each), six tone files and a noise bank of tones."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import app
from core.audio import resample
from core.breakdowns import plan_breakdowns
from core.config import ConfigError, EvaluationConfig
from core.store import Store, session_exists
from pipelines.factorial import build_factorial, read_plan
from pipelines.factorial_config import NONSPEECH, SPEECH, FactorialConfig
from pipelines.factorial_sources import FactorialError
from pipelines.finetune import freeze_manifest
from pipelines.speech_synth import SAMPLE_RATE_HZ, Voice, synthesize
from tests.conftest import tone, write_wav

RATE = 16000
SMALL = FactorialConfig(durations_ms=[200, 1000], snrs_db=[0.0, 20.0], clips_per_cell=3)
SPEAKERS = {"ana": Voice("en+f3", rate_wpm=170, pitch=65), "ben": Voice("en+m1", rate_wpm=165, pitch=40),
            "cal": Voice("en-us+f2", rate_wpm=185, pitch=70), "dev": Voice("en-us+m2", rate_wpm=200, pitch=30),
            "eli": Voice("en-gb-x-rp+m3", rate_wpm=150, pitch=35)}
PHRASES = ("seven three nine, call me back tomorrow", "the quick brown fox jumps over the lazy dog")
TONES_HZ = (300, 420, 550, 700, 860, 990)
BANK_TONE_HZ = 1250.0


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A speech manifest (speaker column), a folder of tone files, a MUSAN-layout bank of tones."""
    root = tmp_path_factory.mktemp("factorial-sources")
    rows = []
    for speaker, voice in SPEAKERS.items():
        for number, phrase in enumerate(PHRASES):
            wave = resample(synthesize(phrase, voice=voice), orig_hz=SAMPLE_RATE_HZ, target_hz=RATE)
            write_wav(root / "speech" / f"{speaker}-{number}.wav", wave, RATE)
            rows.append({"path": f"{speaker}-{number}.wav", "label": "speech", "speaker": speaker})
    pd.DataFrame(rows).to_csv(root / "speech" / "speech.csv", index=False)
    for freq in TONES_HZ:
        write_wav(root / "nonspeech" / "tones" / f"tone_{freq}.wav", tone(freq, seconds=3.0), RATE)
    for category in ("music", "speech", "noise"):
        write_wav(root / "bank" / category / "tone.wav", tone(BANK_TONE_HZ, seconds=5.0, amplitude=0.2), RATE)
    return {"speech": root / "speech" / "speech.csv", "nonspeech": root / "nonspeech", "bank": root / "bank"}


def build(sources: dict[str, Path], out: Path, *, config: FactorialConfig = SMALL, **changes):
    options = {"speech": [sources["speech"]], "nonspeech": [sources["nonspeech"]], "noise_bank": sources["bank"],
               "out_dir": out, "config": config, **changes}
    return build_factorial(**options)


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("factorial-build") / "set"
    build(sources, out, session=out.parent / "session")
    return out


def sinusoid(wave: np.ndarray, freq_hz: float) -> np.ndarray:
    """The least-squares fit of a sinusoid of freq_hz (any phase) to wave."""
    t = np.arange(len(wave)) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, wave, rcond=None)
    return basis @ coefficients


def test_written_clips_hold_the_exact_snr_and_the_peak_level(sources, built):
    plan = read_plan(built)
    tones = plan[plan.label == NONSPEECH]
    assert len(tones) == 12
    for row in tones.itertuples():
        mix, rate = sf.read(str(built / row.path), dtype="float64")
        assert rate == RATE and len(mix) == row.duration_ms * RATE // 1000
        signal = sinusoid(mix, float(Path(row.source_file).stem.split("_")[1]))
        background = sinusoid(mix, BANK_TONE_HZ)
        assert np.max(np.abs(mix - signal - background)) < 1e-3  # nothing else in the file but 16-bit rounding
        measured = 10 * math.log10(np.mean(signal ** 2) / np.mean(background ** 2))
        assert measured == pytest.approx(row.snr_db, abs=0.02)
        assert 20 * math.log10(np.max(np.abs(mix))) == pytest.approx(SMALL.peak_dbfs, abs=0.01)


def test_splits_keep_every_speaker_and_source_file_whole_and_each_cell_60_20_20(built):
    plan = read_plan(built)
    assert len(plan) == 2 * 2 * 2 * 3
    for key in ("speaker", "source_file", "group"):
        assert plan.dropna(subset=[key]).groupby(key).split.nunique().max() == 1, key
    assert set(plan[plan.label == SPEECH].speaker) == set(SPEAKERS)
    cells = plan.groupby(["label", "duration_ms", "snr_db", "split"]).size().unstack("split")
    assert (cells[["train", "val", "test"]] == 1).all().all()  # 3 clips: 60/20/20 rounds to 1/1/1
    assert plan.path.is_unique and plan.noise_category.isin(["music", "noise"]).all()


def test_speech_windows_sit_on_speech_and_the_session_breaks_down_by_the_new_metadata(built):
    from core.vad import webrtc_fraction
    plan = read_plan(built)
    for row in plan[plan.label == SPEECH].itertuples():
        source, rate = sf.read(row.source_path, dtype="float32")
        start = int(round(row.window_start_s * rate))
        window = source[start:start + row.duration_ms * rate // 1000]
        assert webrtc_fraction(window, rate, mode=3, frame_ms=30) >= 0.5
    with Store.open(built.parent / "session") as store:
        manifest, _ = freeze_manifest(store)
    breakdowns = plan_breakdowns(manifest, EvaluationConfig())
    grouped = {g.column: g.order for g in breakdowns.groupings}
    assert grouped["duration_ms"] == ["200", "1000"] and len(grouped["snr_db"]) == 2
    assert set(grouped["noise_category"]) <= {"music", "noise"} and "speaker" in grouped
    assert {"source_file", "source_label"} <= set(grouped) | set(breakdowns.skipped)


def test_a_second_build_reuses_the_clips_and_imports_nothing_new(sources, built):
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*.wav")}
    again = build(sources, built, session=built.parent / "session")
    assert again.reused and again.imported.added == 0 and again.imported.already_imported == 24
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*.wav")} == before
    assert any("SPEECH train/val/test" in line for line in again.lines())


def refused(sources, tmp_path, **changes) -> str:
    """The one-line message of a refused build; nothing was written or created."""
    out, session = tmp_path / "out", tmp_path / "session"
    with pytest.raises((FactorialError, ConfigError)) as caught:
        build(sources, out, session=session, **changes)
    assert not out.exists() and not session_exists(session) and not list(tmp_path.glob(".*partial*"))
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_refusals_name_what_to_fix(sources, tmp_path):
    (tmp_path / "empty" / "class").mkdir(parents=True)
    assert "no audio files" in refused(sources, tmp_path, speech=[tmp_path / "empty"])
    assert "no such file or folder" in refused(sources, tmp_path, nonspeech=[tmp_path / "missing"])
    bank = tmp_path / "bank"
    write_wav(bank / "noise" / "hum.wav", tone(50, seconds=2.0), RATE)
    assert "lacks the MUSAN sub-folder(s) music/, speech/" in refused(sources, tmp_path, noise_bank=bank)
    message = refused(sources, tmp_path, config=FactorialConfig(durations_ms=[1000], snrs_db=[20.0],
                                                                 clips_per_cell=40))
    assert re.fullmatch(r"cell 1000 ms x 20 dB x SPEECH: \d+ windows of 1000 ms with speech available in the train "
                        r"split's sources, 24 needed \(2 cell\(s\) short in all\): add SPEECH source audio or lower "
                        r"clips_per_cell", message), message


def test_a_source_below_the_output_rate_is_refused(sources, tmp_path):
    write_wav(tmp_path / "low" / "phone" / "call.wav", tone(300, seconds=2.0, sample_rate_hz=8000), 8000)
    message = refused(sources, tmp_path, nonspeech=[tmp_path / "low"])
    assert "sampled at 8000 Hz, below the output rate 16000 Hz" in message
    with pytest.raises(ConfigError, match="sample_rate_hz: 12345 is not one of"):
        FactorialConfig(sample_rate_hz=12345)


def test_cli_builds_imports_and_prints_the_cell_table(sources, tmp_path, capsys):
    out, session = tmp_path / "set", tmp_path / "session"
    inputs = ["--speech", str(sources["speech"]), "--nonspeech", str(sources["nonspeech"]),
              "--noise-bank", str(sources["bank"]), "--set", "durations_ms=[300]", "--set", "snrs_db=[-5, 10]", "--quiet"]
    assert app.main(["build-factorial", *inputs, "--out", str(out), "--session", str(session),
                     "--clips-per-cell", "3"]) == 0
    printed = capsys.readouterr().out
    assert "12 clips, built in" in printed and "  300 ms   -5 dB" in printed and "12 readable added" in printed
    assert app.main(["build-factorial", *inputs, "--out", str(tmp_path / "big"), "--clips-per-cell", "500"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("earmark: error: ") and error.count("\n") == 1
