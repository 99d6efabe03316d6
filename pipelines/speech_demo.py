"""The speech demo session (plan B): a factorial SPEECH / NONSPEECH set, with planted hygiene faults.

`earmark demo --task speech` synthesises the sources, builds the factorial set from them with
the builder every dataset goes through (pipelines/factorial.py: 4 durations x 5 SNRs x 2 classes
x 25 clips = 1,000 clips by default), plants the hygiene faults (pipelines/speech_demo_faults.py)
and imports it into sessions/speech with the speech relabel rules:

- SPEECH: eSpeak NG phrases and digit strings; each of SPEAKERS (a voice, rate and pitch) is a
  speaker, and the leakage-free split keeps each one whole.
- NONSPEECH: plan B's four kinds (pipelines/speech_demo_sounds.py), KIND_FILES files each.
- Backgrounds: a synthetic noise bank in MUSAN layout (music/, speech/ babble, noise/).
- For training: a second bank made the same way from its own seed, in the session folder
  (TRAINING_BANK, speech-cnn's relative `noise_bank`) for background_noise. It shares no file
  with the bank the clips were mixed with, so no test clip's background is trained on.

Idempotent like the siren demo: the audio is reused while `speech_demo.json` matches the options
(written last), clips the session already has are skipped, and so is a training bank it has.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from core.audio import resample
from core.augment.noise_bank import NoiseBank
from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Store
from pipelines.demo import DEFAULT_AUDIO, REPO_ROOT, DemoSummary
from pipelines.factorial import build_factorial, import_factorial, open_writer
from pipelines.factorial_config import FactorialConfig
from pipelines.speech_demo_faults import plant_faults
from pipelines.speech_demo_sounds import KINDS, bank_sound, nonspeech_sound
from pipelines.speech_synth import SAMPLE_RATE_HZ, Voice, synthesize

__all__ = ["DEFAULT_SPEECH_SESSION", "SPEECH_RULES_FILE", "TRAINING_BANK", "SpeechDemoSummary",
           "build_speech_demo_session", "default_speech_audio_dir", "write_demo_sources", "write_training_bank"]

DEFAULT_SPEECH_SESSION = REPO_ROOT / "sessions" / "speech"
SPEECH_RULES_FILE = rules_file("speech")  # B6's tags: speech, nonspeech, mixed, silence
STAMP_NAME, SET_NAME, DEMO_VERSION = "speech_demo.json", "speech-demo", 1
OWN_ENTRIES = {"sources", "bank", SET_NAME, STAMP_NAME}  # all the demo writes in its audio folder

SPEAKERS = {  # speaker -> voice: eSpeak NG's English voices and variants, at their own rate and pitch
    "amy": Voice("en+f1", 165, 60), "bob": Voice("en+m1", 160, 40), "cara": Voice("en-us+f2", 185, 70),
    "dan": Voice("en-us+m2", 195, 35), "eve": Voice("en-gb-x-rp+f5", 150, 55), "finn": Voice("en-gb-x-rp+m3", 155, 30),
    "gwen": Voice("en-gb-scotland+f3", 170, 65), "hugh": Voice("en-gb-scotland+m4", 175, 45),
    "iris": Voice("en-029+f4", 180, 75), "jack": Voice("en-029+m5", 190, 50), "kate": Voice("en-us-nyc+f1", 160, 68),
    "liam": Voice("en-us-nyc+m6", 170, 38), "mia": Voice("en-gb-x-gbclan+f2", 175, 72),
    "ned": Voice("en-gb-x-gbclan+m7", 165, 42), "opal": Voice("en+f3", 200, 58), "paul": Voice("en-us+m1", 145, 33),
}
LEAK_VOICES = (Voice("en+m2", 175, 48), Voice("en-us+f5", 180, 62))  # leaks are nobody the split knows
PHRASES = ("please call me back tomorrow", "the meeting starts at nine", "turn left at the next corner",
           "where did you put the keys", "it might rain later today", "could you open the window",
           "the train is running late again", "let us meet by the station", "i will send it this evening",
           "how much does this one cost", "the kettle has just boiled", "we need more paper for the printer",
           "thank you for waiting", "the road is closed until friday", "can you hear me now",
           "my number has changed", "put it on the table please", "the shop opens at eight")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEAKER_FILES, KIND_FILES, SOURCE_S, BANK_FILES, BANK_S = 5, 20, 5.0, 3, 10.0
TRAINING_BANK = "noise_bank"  # in the session folder; data/presets/speech-cnn.yaml names it (relative = the session's)


@dataclasses.dataclass
class SpeechDemoSummary(DemoSummary):
    details: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        return [*super().lines()[:2], *self.details, *self.imported.lines()]


def default_speech_audio_dir(config: FactorialConfig) -> Path:
    """data/demo_audio-speech for the default options; a folder of their own for others."""
    if config == FactorialConfig():
        return DEFAULT_AUDIO.with_name(f"{DEFAULT_AUDIO.name}-speech")
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return DEFAULT_AUDIO.with_name(f"{DEFAULT_AUDIO.name}-speech-{digest}")


def build_speech_demo_session(*, session_dir: str | Path = DEFAULT_SPEECH_SESSION, audio_dir: str | Path | None = None,
                              config: FactorialConfig | None = None, progress: bool = True,
                              store: Store | None = None) -> SpeechDemoSummary:
    """Synthesise and build the speech demo set (if missing) and import it (what is missing).
    config: the factorial options (default: the plan's 40 cells x 25 clips)."""
    config = config or FactorialConfig()
    audio_dir = Path(audio_dir) if audio_dir else default_speech_audio_dir(config)
    started = time.perf_counter()
    stamp = {"version": DEMO_VERSION, "config": config.to_dict()}
    details = _read_stamp(audio_dir, stamp)
    if details is None:
        details = _build_audio(audio_dir, stamp, config=config, progress=progress)
    with open_writer(store=store, session=session_dir) as writer:
        bank = Path(writer.session_dir) / TRAINING_BANK
        written = write_training_bank(bank, seed=config.seed, sample_rate_hz=config.sample_rate_hz)
        details = [*details, f"training noise bank (background_noise; shares no file with the mixing bank) "
                             f"{'written to' if written else 'already in'} {bank}"]
        synth_seconds = time.perf_counter() - started
        imported = import_factorial(writer, audio_dir / SET_NAME, seed=config.seed, progress=progress)
        seed_rules(writer, load_rules(SPEECH_RULES_FILE))
    return SpeechDemoSummary(session_dir=Path(session_dir), audio_dir=audio_dir, synth_seconds=synth_seconds,
                             imported=imported, details=details)


def _read_stamp(audio_dir: Path, stamp: dict) -> list[str] | None:
    """The build's report when audio_dir holds a complete build of these options, else None."""
    try:
        found = json.loads((audio_dir / STAMP_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    complete = {k: found.get(k) for k in stamp} == stamp and (audio_dir / SET_NAME / "manifest.csv").is_file()
    return ["reused the audio built before with these options", *found["details"]] if complete else None


def write_demo_sources(folder: Path, *, seed: int, sample_rate_hz: int, progress: bool = False) -> dict[str, Path]:
    """The demo's sources under folder: {"speech": a folder per speaker, "nonspeech": a folder per
    kind, "bank": the noise bank}, ready for build_factorial (bench/factorial.py builds from them too)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    paths = {"speech": folder / "sources" / "speech", "nonspeech": folder / "sources" / "nonspeech",
             "bank": folder / "bank"}
    _write_speech_sources(paths["speech"], rng=rng, rate=sample_rate_hz, progress=progress)
    _write_nonspeech_sources(paths["nonspeech"], rng=rng, rate=sample_rate_hz)
    _write_bank(paths["bank"], rng=rng, rate=sample_rate_hz)
    return paths


def write_training_bank(folder: Path, *, seed: int, sample_rate_hz: int) -> bool:
    """The bank training augments with (background_noise), in MUSAN layout at folder, unless it is
    there already; True when written. Made like the mixing bank (_write_bank) but from a generator
    of its own, so none of its files is one the demo's clips were mixed with. Written aside and
    renamed into place, so an interrupted build leaves no half bank that would count as there."""
    if folder.is_dir():
        return False
    partial = folder.with_name(f".{folder.name}-partial")
    shutil.rmtree(partial, ignore_errors=True)
    _write_bank(partial, rng=np.random.default_rng(np.random.SeedSequence([seed, 32])), rate=sample_rate_hz)
    partial.rename(folder)
    return True


def _build_audio(audio_dir: Path, stamp: dict, *, config: FactorialConfig, progress: bool) -> list[str]:
    _clear(audio_dir)
    rate = config.sample_rate_hz
    sources = write_demo_sources(audio_dir, seed=config.seed, sample_rate_hz=rate, progress=progress)
    built = build_factorial(speech=[sources["speech"]], nonspeech=[sources["nonspeech"]], noise_bank=sources["bank"],
                            out_dir=audio_dir / SET_NAME, config=config, progress=progress)
    bank = NoiseBank(sources["bank"], sample_rate_hz=rate)
    faults = plant_faults(audio_dir / SET_NAME, bank=bank, config=config,
                          speech=lambda r, n: _leak_fragment(r, n, rate=rate))
    details = [*built.lines(), "planted faults (truth in clip metadata only): "
               + ", ".join(f"{fault} {n}" for fault, n in faults.items())]
    (audio_dir / STAMP_NAME).write_text(json.dumps({**stamp, "details": details}, indent=2))
    return details


def _clear(audio_dir: Path) -> None:
    """Remove an earlier build; refuse a folder holding anything the demo did not write."""
    if not audio_dir.exists():
        return
    foreign = sorted(p.name for p in audio_dir.iterdir() if p.name not in OWN_ENTRIES)
    if foreign:
        raise ValueError(f"audio_dir: {audio_dir} holds files the speech demo did not write ({', '.join(foreign[:3])}); "
                         "choose another folder")
    shutil.rmtree(audio_dir)


def _spoken(text: str, voice: Voice, rng: np.random.Generator, *, rate: int) -> np.ndarray:
    """text in voice, its rate and pitch jittered as a person's vary, trimmed to the speech, at rate."""
    take = dataclasses.replace(voice, rate_wpm=int(voice.rate_wpm + rng.integers(-15, 16)),
                               pitch=int(np.clip(voice.pitch + rng.integers(-6, 7), 0, 100)))
    wave = synthesize(text, voice=take)
    loud = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    return resample(wave[loud[0]:loud[-1] + 1], orig_hz=SAMPLE_RATE_HZ, target_hz=rate)


def _utterance(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return str(rng.choice(PHRASES))
    return " ".join(rng.choice(DIGITS, size=int(rng.integers(3, 7))))


def _write_speech_sources(folder: Path, *, rng: np.random.Generator, rate: int, progress: bool) -> None:
    """SPEAKER_FILES recordings per speaker: utterances with short pauses, about SOURCE_S long."""
    for speaker, voice in tqdm(SPEAKERS.items(), desc="speaking (eSpeak NG)", unit="speaker", disable=not progress):
        for number in range(SPEAKER_FILES):
            parts, length = [np.zeros(int(rng.uniform(0.1, 0.3) * rate))], 0
            while length < SOURCE_S * rate:
                parts += [_spoken(_utterance(rng), voice, rng, rate=rate), np.zeros(int(rng.uniform(0.15, 0.5) * rate))]
                length = sum(map(len, parts))
            recording = np.concatenate(parts) * rng.uniform(0.3, 0.9)
            _write(folder / speaker / f"{speaker}-{number}.wav", recording, rate)


def _write_nonspeech_sources(folder: Path, *, rng: np.random.Generator, rate: int) -> None:
    """KIND_FILES recordings of each kind, in a folder per kind (the clips' source_label)."""
    for kind in KINDS:
        for number in range(KIND_FILES):
            sound = nonspeech_sound(kind, rng=rng, n=int(SOURCE_S * rate), sr=rate) * rng.uniform(0.3, 0.9)
            _write(folder / kind / f"{kind}-{number:02d}.wav", sound, rate)


def _write_bank(folder: Path, *, rng: np.random.Generator, rate: int) -> None:
    """A small bank in MUSAN layout: music/, noise/ and speech/ (babble of the leak voices)."""
    n = int(BANK_S * rate)
    for category in ("music", "noise"):
        for number in range(BANK_FILES):
            _write(folder / category / f"{category}-{number}.wav", bank_sound(category, rng=rng, n=n, sr=rate) * 0.5, rate)
    for number in range(BANK_FILES):
        babble = sum(np.resize(_leak_fragment(rng, n, rate=rate), n) for _ in range(3))
        _write(folder / "speech" / f"babble-{number}.wav", 0.5 * babble / np.max(np.abs(babble)), rate)


def _leak_fragment(rng: np.random.Generator, n: int, *, rate: int) -> np.ndarray:
    """n samples of continuous speech by a leak voice (phrases run together)."""
    voice = LEAK_VOICES[int(rng.integers(len(LEAK_VOICES)))]
    parts = [_spoken(str(rng.choice(PHRASES)), voice, rng, rate=rate)]
    while sum(map(len, parts)) < n:
        parts.append(_spoken(str(rng.choice(PHRASES)), voice, rng, rate=rate))
    return np.concatenate(parts)[:n]


def _write(path: Path, wave: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(wave, dtype=np.float32), rate, subtype="PCM_16")
