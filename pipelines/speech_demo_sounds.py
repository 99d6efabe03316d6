"""The speech demo's non-speech sounds: plan B's four kinds, and a noise bank in MUSAN layout.

- music: harmonic note melodies, sustained chords, drum patterns;
- noise: white, pink, brown, mains hum;
- environmental: the siren demo's own recipes (pipelines/demo_signals.py: sirens, beeps, impacts,
  traffic, rain, wind), rendered dry;
- animal: the siren demo's birds and insects, and barks and croaks made here.

The DSP primitives (harmonic tones, coloured noise, gates) are the siren demo's, reused. Every
sound is a pure function of its seeded generator.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from pipelines.demo_signals import colored_noise, gate_envelope, harmonic_tone, render_clip

__all__ = ["KINDS", "bank_sound", "nonspeech_sound"]

KINDS = ("music", "noise", "environmental", "animal")
# (class, kind) of the siren demo's recipes: the environmental sounds, and its animal ones.
SIREN_DEMO_ENVIRONMENTAL = (("emergency_sirens", "wail"), ("emergency_sirens", "yelp"), ("alert_sounds", "beep"),
                            ("alert_sounds", "chirp"), ("collision_sounds", "metal"), ("collision_sounds", "glass"),
                            ("road_traffic", "flow"), ("road_traffic", "passby"), ("environmental_sounds", "rain"),
                            ("environmental_sounds", "wind"))
SIREN_DEMO_ANIMAL = (("environmental_sounds", "birds"), ("environmental_sounds", "insects"))
HARMONICS = 1.0 / np.arange(1, 13)


def nonspeech_sound(kind: str, *, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """n samples of one sound of kind (KINDS) at sr, peak 1."""
    styles = _STYLES[kind]
    wave = styles[int(rng.integers(len(styles)))](rng, n, sr)
    return wave / max(float(np.max(np.abs(wave))), 1e-12)


def bank_sound(category: str, *, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Background for the noise bank's music/ or noise/ folder (noise/ also takes rain, wind and
    traffic, as MUSAN's does); peak 1. The bank's speech/ folder is eSpeak babble, made by the demo."""
    pool = {"music": _STYLES["music"], "noise": _STYLES["noise"] + (_siren_demo(SIREN_DEMO_ENVIRONMENTAL[6:]),)}
    styles = pool[category]
    wave = styles[int(rng.integers(len(styles)))](rng, n, sr)
    return wave / max(float(np.max(np.abs(wave))), 1e-12)


# --- music -----------------------------------------------------------------------------------

def _midi_hz(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2 ** ((np.asarray(note, dtype=float) - 69) / 12)


def _notes(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A melody of plucked or bowed harmonic notes on a scale, at a steady tempo."""
    beat = 60 / rng.uniform(90, 160) / rng.choice([1, 2])
    scale = rng.integers(48, 60) + np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    starts = np.arange(0, n / sr, beat)
    freq = np.repeat(_midi_hz(rng.choice(scale, len(starts))), int(round(beat * sr)))[:n]
    freq = np.pad(freq, (0, n - len(freq)), mode="edge")
    decay = rng.uniform(0.15, 1.0)
    t_in_note = (np.arange(n) / sr) % beat
    envelope = np.minimum(t_in_note / 0.01, 1.0) * np.exp(-t_in_note / decay)
    return harmonic_tone(freq, sr, HARMONICS ** rng.uniform(1.0, 2.0)) * envelope


def _chords(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Sustained triads and sevenths changing every bar, each note a harmonic tone."""
    bar = rng.uniform(0.8, 2.0)
    out = np.zeros(n)
    for start in np.arange(0, n / sr, bar):
        third = int(rng.choice([3, 4]))  # minor or major
        notes = rng.integers(45, 60) + np.array([0, third, 7, 10])[: int(rng.integers(3, 5))]
        i0, i1 = int(start * sr), min(n, int((start + bar) * sr))
        t = np.arange(i1 - i0) / sr
        envelope = np.minimum(t / rng.uniform(0.02, 0.2), 1.0) * np.exp(-t / rng.uniform(1.0, 4.0))
        for note in notes:
            out[i0:i1] += harmonic_tone(np.full(i1 - i0, _midi_hz(note)), sr, HARMONICS ** 1.5) * envelope
    return out


def _percussion(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A drum pattern on a 16th-note grid: kick (falling sine), snare (noise and tone), hi-hat."""
    step = 60 / rng.uniform(80, 140) / 4
    out = np.zeros(n)
    hits = {"kick": _kick(sr), "snare": _snare(rng, sr), "hat": _hat(rng, sr)}
    pattern = {"kick": rng.random(16) < [0.9 if i % 8 == 0 else 0.15 for i in range(16)],
               "snare": rng.random(16) < [0.9 if i % 8 == 4 else 0.05 for i in range(16)],
               "hat": rng.random(16) < 0.7}
    for index, start in enumerate(np.arange(0, n / sr, step)):
        for name, hit in hits.items():
            if pattern[name][index % 16]:
                i0 = int(start * sr)
                part = hit[: n - i0] * rng.uniform(0.6, 1.0)
                out[i0:i0 + len(part)] += part
    return out


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.3 * sr)) / sr
    return np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-t / 0.03)) / sr) * np.exp(-t / 0.12)


def _snare(rng: np.random.Generator, sr: int) -> np.ndarray:
    t = np.arange(int(0.2 * sr)) / sr
    return (0.7 * rng.standard_normal(len(t)) + np.sin(2 * np.pi * 190 * t)) * np.exp(-t / 0.05)


def _hat(rng: np.random.Generator, sr: int) -> np.ndarray:
    t = np.arange(int(0.06 * sr)) / sr
    return 0.4 * np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / 0.015)


# --- noise -----------------------------------------------------------------------------------

def _coloured(exponent: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    return lambda rng, n, sr: colored_noise(rng, n, exponent=exponent)


def _hum(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Mains hum (50 or 60 Hz and its harmonics) over a little hiss."""
    mains = np.full(n, float(rng.choice([50.0, 60.0])))
    return harmonic_tone(mains, sr, rng.uniform(0.2, 1.0, 8) / np.arange(1, 9)) + 0.02 * rng.standard_normal(n)


# --- environmental and animal ----------------------------------------------------------------

def _siren_demo(recipes: tuple[tuple[str, str], ...]) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    """A sound from the siren demo's recipes, dry (no background), via its public render_clip."""
    def render(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
        label, kind = recipes[int(rng.integers(len(recipes)))]
        room = SimpleNamespace(true_label=label, rt60_s=float(rng.uniform(0.2, 0.6)), reverb_wet=0.1,
                               background="none", channel_band_hz=(40.0, 0.45 * sr))
        clip = SimpleNamespace(session=room, kind=kind, duration_s=n / sr, snr_db=None, peak=0.9,
                               entropy=tuple(int(v) for v in rng.integers(0, 2**32, 3)))
        return np.resize(render_clip(clip, sr), n)
    return render


def _barks(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Groups of one to four barks: short, falling, noisy harmonic bursts (400-800 Hz)."""
    out, cursor = np.zeros(n), rng.uniform(0.0, 0.4)
    while cursor < n / sr - 0.3:
        for _ in range(int(rng.integers(1, 5))):
            length = rng.uniform(0.12, 0.25)
            m = min(int(length * sr), n - int(cursor * sr))
            if m < int(0.05 * sr):
                break
            u = np.linspace(0, 1, m)
            bark = harmonic_tone(rng.uniform(400, 800) * (1 - 0.3 * u), sr, HARMONICS[:8]) + 0.4 * rng.standard_normal(m)
            out[int(cursor * sr):int(cursor * sr) + m] += bark * np.sin(np.pi * u) ** 0.5
            cursor += length + rng.uniform(0.08, 0.2)
        cursor += rng.uniform(0.4, 1.2)
    return out


def _croaks(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A frog's croaks: bouts of fast pulses (15-40 per second) of a 300-900 Hz resonance."""
    rate, carrier = rng.uniform(15, 40), rng.uniform(300, 900)
    bouts = [(start, rng.uniform(0.2, 0.6)) for start in np.arange(rng.uniform(0, 0.5), n / sr, rng.uniform(0.6, 1.2))]
    pulses = [(start + k / rate, 0.4 / rate) for start, length in bouts for k in range(int(length * rate))]
    return harmonic_tone(np.full(n, carrier), sr, HARMONICS[:4]) * gate_envelope(n, sr, pulses, ramp_s=0.003)


_STYLES = {
    "music": (_notes, _chords, _percussion),
    "noise": (_coloured(0.0), _coloured(1.0), _coloured(2.0), _hum),
    "environmental": (_siren_demo(SIREN_DEMO_ENVIRONMENTAL),),
    "animal": (_siren_demo(SIREN_DEMO_ANIMAL), _barks, _croaks),
}
