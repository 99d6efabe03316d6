"""The demo's sounds, synthesised from physical recipes (pipelines/demo_synth.py plans which).

Swept harmonic siren horns with Doppler over traffic, piezo beeps with sharp gates, modal
impacts with glass tinkles and skids, engines and pass-bys, formant-filtered screams, and
rain/wind/bird/insect textures, each over its session's background at its SNR, with reverb and
a channel band. Every clip is a pure function of its planned parameters and seed entropy, so
the same plan always gives the same bytes.
"""
from __future__ import annotations

import numpy as np
from scipy import fft as sp_fft
from scipy import signal
from scipy.interpolate import PchipInterpolator

CLASSES = ("emergency_sirens", "collision_sounds", "alert_sounds", "road_traffic",
           "human_scream", "environmental_sounds")
SIRENS, COLLISION, ALERT, TRAFFIC, SCREAM, ENVIRONMENT = CLASSES
TONAL_DRONE = "tonal_drone"  # exists only as a planted error: true environmental, given siren
SPEED_OF_SOUND_M_S = 343.0


def render_clip(clip, sample_rate_hz: int) -> np.ndarray:
    """The clip's waveform, float64 in [-peak, peak], peak in (0, 0.95]; `clip` is a planned clip
    of pipelines/demo_synth.py (entropy, kind, duration, SNR, peak and its session's recording)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(clip.entropy)))
    session = clip.session
    n = int(round(clip.duration_s * sample_rate_hz))
    sound = _SYNTHS[session.true_label](rng, clip.kind, n, sample_rate_hz)
    sound = _reverb(rng, sound, sample_rate_hz, rt60_s=session.rt60_s, wet=session.reverb_wet)
    if clip.snr_db is not None:
        noise = _BACKGROUNDS[session.background](rng, n, sample_rate_hz)
        sound = _mix_at_snr(sound, noise, snr_db=clip.snr_db)
    low_hz, high_hz = session.channel_band_hz
    sound = _filter(sound, sample_rate_hz, low_hz=low_hz, high_hz=high_hz, order=2)
    return sound * (clip.peak / max(np.max(np.abs(sound)), 1e-9))


# --- DSP primitives ------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (silence stays silence)."""
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def colored_noise(rng: np.random.Generator, n: int, *, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    size = sp_fft.next_fast_len(n, real=True)  # an arbitrary n can have large prime factors
    spectrum = rng.standard_normal(size // 2 + 1) + 1j * rng.standard_normal(size // 2 + 1)
    freqs = np.fft.rfftfreq(size)
    freqs[0] = freqs[1]
    return _unit(sp_fft.irfft(spectrum * freqs ** (-exponent / 2), size)[:n])


def _filter(x: np.ndarray, sr: int, *, low_hz: float | None = None, high_hz: float | None = None,
            order: int = 4) -> np.ndarray:
    """Butterworth high-pass above low_hz, low-pass below high_hz, band-pass with both."""
    nyquist = sr / 2
    high_hz = None if high_hz is None or high_hz >= 0.95 * nyquist else high_hz
    if low_hz is not None and high_hz is not None:
        sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    elif low_hz is not None:
        sos = signal.butter(order, low_hz, btype="highpass", fs=sr, output="sos")
    elif high_hz is not None:
        sos = signal.butter(order, high_hz, btype="lowpass", fs=sr, output="sos")
    else:
        return x
    return signal.sosfilt(sos, x)


def _smooth_random(rng: np.random.Generator, n: int, sr: int, *, rate_hz: float) -> np.ndarray:
    """A smooth random curve in [-1, 1] with about `rate_hz` turns per second."""
    n_knots = max(2, int(n / sr * rate_hz) + 2)
    knots = np.linspace(0, n, n_knots)
    return PchipInterpolator(knots, rng.uniform(-1, 1, n_knots))(np.arange(n))


def harmonic_tone(freq_hz: np.ndarray, sr: int, weights: np.ndarray, *,
          brightness: np.ndarray | None = None) -> np.ndarray:
    """Harmonic tone sum_k w_k b**(k-1) sin(k phase) for a per-sample f0 (Hz).

    Harmonics fade out before 0.45*sr, so nothing aliases. sin(k phase) comes from the
    Chebyshev recurrence, one multiply-add per harmonic instead of a sine.
    """
    phase = 2 * np.pi * np.cumsum(freq_hz) / sr
    twice_cos = 2 * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    out = weights[0] * current
    tilt = None if brightness is None else np.ones_like(phase)
    limit_hz, fade_hz = 0.45 * sr, 0.05 * sr
    max_f0, min_f0 = float(np.max(freq_hz)), float(np.min(freq_hz))
    for k, weight in enumerate(weights[1:], start=2):
        previous *= -1
        previous += twice_cos * current  # sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x)
        previous, current = current, previous
        if tilt is not None:
            tilt *= brightness
        if k * min_f0 >= limit_hz:
            break
        if weight == 0:
            continue
        gain = weight if tilt is None else weight * tilt
        if k * max_f0 >= limit_hz - fade_hz:
            gain = gain * np.clip((limit_hz - k * freq_hz) / fade_hz, 0, 1)
        out += gain * current
    return out


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` samples; the edges repeat the end values."""
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return signal.oaconvolve(padded, np.full(width, 1.0 / width), mode="valid")


def gate_envelope(n: int, sr: int, segments_s: list[tuple[float, float]], *, ramp_s: float) -> np.ndarray:
    """0/1 envelope that is on during each (start, length) segment, edges ramped over ramp_s."""
    env = np.zeros(n)
    for start, length in segments_s:
        env[max(0, int(start * sr)):max(0, int((start + length) * sr))] = 1.0
    width = max(1, int(ramp_s * sr))
    if width > 1:
        kernel = np.hanning(width + 2)[1:-1]
        env = signal.oaconvolve(env, kernel / kernel.sum(), mode="same")
    return np.clip(env, 0.0, 1.0)


def _decaying_modes(sr: int, length_s: float, freqs_hz: np.ndarray, decays_s: np.ndarray,
                    amps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Impulse response of a set of resonant modes: sum a_i exp(-t/tau_i) sin(2 pi f_i t + phi_i)."""
    t = np.arange(int(length_s * sr)) / sr
    keep = freqs_hz < 0.45 * sr
    freqs_hz, decays_s, amps = freqs_hz[keep], decays_s[keep], amps[keep]
    phases = rng.uniform(0, 2 * np.pi, len(freqs_hz))
    modes = np.sin(2 * np.pi * freqs_hz[:, None] * t + phases[:, None]) * np.exp(-t / decays_s[:, None])
    return np.einsum("m,mt->t", amps, modes)  # einsum, not @: no BLAS thread pool per worker


def _place_contour(freq_hz: np.ndarray, start: int, contour: np.ndarray, *, hold: int) -> None:
    """Write a pitch contour at `start` and hold its end values `hold` samples either side,
    so the pitch does not jump while a gate is still ramping (that would splatter)."""
    stop = start + len(contour)
    freq_hz[start:stop] = contour
    freq_hz[max(0, start - hold):start] = contour[0]
    freq_hz[stop:stop + hold] = contour[-1]


def _impulses(n: int, sr: int, times_s: np.ndarray, amps: np.ndarray) -> np.ndarray:
    train = np.zeros(n)
    index = (np.asarray(times_s) * sr).astype(int)
    inside = (index >= 0) & (index < n)
    np.add.at(train, index[inside], np.asarray(amps)[inside])
    return train


def _passby(t: np.ndarray, *, t0_s: float, speed_m_s: float,
            closest_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Doppler pitch ratio and 1/distance amplitude (1 at closest approach) of a straight pass."""
    along = speed_m_s * (t - t0_s)
    distance = np.sqrt(closest_m ** 2 + along ** 2)
    radial_speed = speed_m_s * along / distance  # > 0 once the source moves away
    return SPEED_OF_SOUND_M_S / (SPEED_OF_SOUND_M_S + radial_speed), closest_m / distance


def _reverb(rng: np.random.Generator, x: np.ndarray, sr: int, *, rt60_s: float, wet: float) -> np.ndarray:
    """Add a diffuse tail: exponentially decaying, darkened noise IR, mixed at `wet` (0..1)."""
    t = np.arange(int(rt60_s * sr)) / sr
    ir = _filter(rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60_s), sr, high_hz=4000, order=2)
    tail = signal.oaconvolve(x, ir)[: len(x)]
    return (1 - wet) * x + wet * _unit(tail) * np.sqrt(np.mean(x * x))


def _mix_at_snr(foreground: np.ndarray, noise: np.ndarray, *, snr_db: float) -> np.ndarray:
    """foreground + noise scaled so 10 log10(P_fg / P_noise) = snr_db over the whole clip."""
    fg_rms = np.sqrt(np.mean(foreground ** 2))
    return foreground + _unit(noise) * fg_rms * 10 ** (-snr_db / 20)


# --- the six classes ---------------------------------------------------------------------

def _siren(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Square-ish horn (odd-harmonic stack) swept wail/yelp, stepped hi-lo or whooping bursts,
    with a Doppler pass-by or a slowly wandering static distance."""
    t = np.arange(n) / sr
    low = rng.uniform(550, 850)
    high = min(low * rng.uniform(1.6, 2.2), 1750.0)
    gate = np.ones(n)
    if kind == "wail":
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi))
        freq = low + (high - low) * sweep ** 0.8
    elif kind == "yelp":
        saw = signal.sawtooth(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi),
                              width=rng.uniform(0.6, 0.9))
        freq = low + (high - low) * (saw + 1) / 2
    elif kind == "hilo":
        f_high = rng.uniform(900, 1000)
        steps = signal.square(2 * np.pi * rng.uniform(0.8, 1.6) * t + rng.uniform(0, 2 * np.pi))
        freq = np.where(steps > 0, f_high, f_high * rng.uniform(0.77, 0.82))
        freq = _moving_average(freq, int(0.01 * sr))  # a 10 ms glide between the two tones
    else:  # burst: short whoops, each rising fast from low to high
        freq = np.full(n, low)
        segments, cursor = [], rng.uniform(0.0, 0.5)
        while cursor < n / sr - 0.3:
            length = rng.uniform(0.4, 1.2)
            i0, i1 = int(cursor * sr), min(n, int((cursor + length) * sr))
            _place_contour(freq, i0, low + (high - low) * np.sqrt(np.linspace(0, 1, i1 - i0)),
                           hold=int(0.02 * sr))
            segments.append((cursor, length))
            cursor += length + rng.uniform(0.15, 0.6)
        gate = gate_envelope(n, sr, segments, ramp_s=0.02)
    k = np.arange(1, 17)
    weights = np.where(k % 2 == 1, 1.0, rng.uniform(0.05, 0.35)) / k ** rng.uniform(1.0, 1.5)
    if rng.random() < 0.6:
        ratio, loudness = _passby(t, t0_s=rng.uniform(0.2, 0.8) * n / sr,
                                  speed_m_s=rng.uniform(8, 25), closest_m=rng.uniform(5, 30))
    else:
        ratio = 1 + rng.uniform(0, 0.01) * _smooth_random(rng, n, sr, rate_hz=0.2)
        loudness = 10 ** (0.15 * _smooth_random(rng, n, sr, rate_hz=0.5))
    brightness = 0.7 + 0.3 * loudness / np.max(loudness)  # air absorbs highs more with distance
    return harmonic_tone(freq * ratio, sr, weights, brightness=brightness) * loudness * gate


def _alert(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Piezo beeps/chirps at siren pitch: steady pitch inside each beep, sharp on/off gates."""
    dur = n / sr
    pitch = rng.uniform(650, 1600)
    freq = np.full(n, pitch)
    if kind == "beep":
        pattern = rng.choice(["reversing", "alarm_clock", "appliance", "pulse"])
        if pattern == "reversing":
            on = rng.uniform(0.35, 0.55)
            starts = np.arange(rng.uniform(0, 0.5), dur, on * rng.uniform(1.8, 2.2))
            segments = [(s, on) for s in starts]
        elif pattern == "alarm_clock":
            on, period = rng.uniform(0.06, 0.1), rng.uniform(0.8, 1.2)
            segments = [(g + i * 2 * on, on) for g in np.arange(rng.uniform(0, 0.4), dur, period)
                        for i in range(4)]
        elif pattern == "appliance":
            on, gap, count = rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.3), int(rng.integers(3, 6))
            period = count * (on + gap) + rng.uniform(0.8, 2.0)
            segments = [(g + i * (on + gap), on) for g in np.arange(rng.uniform(0, 0.5), dur, period)
                        for i in range(count)]
        else:
            on = rng.uniform(0.04, 0.12)
            segments = [(s, on) for s in np.arange(rng.uniform(0, 0.3), dur, 1 / rng.uniform(2, 5))]
        weights = np.array([1, 0, rng.uniform(0.1, 0.5), 0, rng.uniform(0.05, 0.25), 0, rng.uniform(0, 0.1)])
    else:  # chirp: a phone-style trill stepping between two steady tones, in bursts
        t = np.arange(n) / sr
        steps = signal.square(2 * np.pi * rng.uniform(12, 25) * t)
        freq = np.where(steps > 0, pitch, pitch * rng.uniform(0.75, 0.85))
        burst, period = rng.uniform(0.3, 1.0), rng.uniform(1.5, 3.0)
        segments = [(s, burst) for s in np.arange(rng.uniform(0, 0.5), dur, period)]
        weights = np.array([1, rng.uniform(0, 0.2), rng.uniform(0.1, 0.3), 0, rng.uniform(0, 0.1)])
    gate = gate_envelope(n, sr, segments, ramp_s=0.003)
    return harmonic_tone(freq, sr, weights) * gate


def _collision(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """A crash: broadband crack + body thump, then metal modes ringing or glass shattering
    into tinkles; debris hits follow; sometimes a tyre skid leads in."""
    dur = n / sr
    t_hit = rng.uniform(0.1, 0.4) * dur
    n_debris = int(rng.integers(2, 9))
    hit_times = np.concatenate([[t_hit], t_hit + np.cumsum(rng.exponential(0.15, n_debris))])
    hit_amps = np.concatenate([[1.0], 0.6 ** np.arange(1, n_debris + 1) * rng.uniform(0.3, 1, n_debris)])
    hits = _impulses(n, sr, hit_times, hit_amps)
    kt = np.arange(int(0.2 * sr)) / sr
    crack = signal.oaconvolve(hits, rng.standard_normal(len(kt)) * np.exp(-kt / rng.uniform(0.008, 0.03)))[:n]
    thump_kernel = _filter(rng.standard_normal(len(kt)), sr, high_hz=rng.uniform(150, 400))
    thump_kernel *= np.exp(-kt / 0.06)
    thump = signal.oaconvolve(hits, thump_kernel)[:n]
    ring_s = min(2.5, dur - t_hit + 0.1)
    if kind == "metal":
        base = rng.uniform(150, 500)
        freqs = np.sort(base * rng.uniform(1, 25, int(rng.integers(12, 26))))
        decays = rng.uniform(0.3, 1.5, len(freqs)) * (freqs / base) ** -0.4
        amps = rng.uniform(0.3, 1, len(freqs)) / np.sqrt(np.arange(1, len(freqs) + 1))
        body = signal.oaconvolve(hits, _decaying_modes(sr, ring_s, freqs, decays, amps, rng))[:n]
        sound = 0.5 * _unit(crack) + 0.6 * _unit(thump) + 1.2 * _unit(body)
    else:
        freqs = rng.uniform(2000, 7200, int(rng.integers(15, 31)))
        shatter = _decaying_modes(sr, 0.4, freqs, rng.uniform(0.02, 0.25, len(freqs)),
                                  rng.uniform(0.2, 1, len(freqs)), rng)
        glass = signal.oaconvolve(hits, shatter)[:n]
        bright = _filter(crack, sr, low_hz=2000)
        sound = 0.5 * _unit(crack) + 0.3 * _unit(thump) + _unit(glass) + 0.6 * _unit(bright)
        sound += 0.8 * np.sqrt(np.mean(sound ** 2)) * _unit(_tinkles(rng, n, sr, t_hit=t_hit))
    if rng.random() < 0.35 and t_hit > 0.8:
        sound += 0.5 * np.sqrt(np.mean(sound ** 2)) * _unit(_skid(rng, n, sr, end_s=t_hit))
    return sound


def _tinkles(rng: np.random.Generator, n: int, sr: int, *, t_hit: float) -> np.ndarray:
    """Small glass pieces landing after the crash: sparse high partials, density decaying."""
    count = int(rng.integers(40, 150))
    times = t_hit + 0.05 + rng.exponential(rng.uniform(0.4, 1.0), count)
    amps = rng.lognormal(0, 0.6, count) * np.exp(-(times - t_hit) / 1.5)
    voices = rng.integers(0, 6, count)
    out = np.zeros(n)
    for voice in range(6):
        kernel = _decaying_modes(sr, 0.12, rng.uniform(3000, 7500, 3), rng.uniform(0.005, 0.04, 3),
                                 rng.uniform(0.5, 1, 3), rng)
        mine = voices == voice
        out += signal.oaconvolve(_impulses(n, sr, times[mine], amps[mine]), kernel)[:n]
    return out


def _skid(rng: np.random.Generator, n: int, sr: int, *, end_s: float) -> np.ndarray:
    """Tyre screech ending at the impact: wobbling squeal tone in band-limited noise, crescendo."""
    start_s = max(0.0, end_s - rng.uniform(0.5, 1.5))
    gate = gate_envelope(n, sr, [(start_s, end_s - start_s)], ramp_s=0.05)
    crescendo = np.clip((np.arange(n) / sr - start_s) / max(end_s - start_s, 1e-3), 0, 1)
    squeal_f = rng.uniform(700, 1400) * (1 + 0.03 * _smooth_random(rng, n, sr, rate_hz=8))
    squeal = harmonic_tone(squeal_f, sr, np.array([1, 0.3, 0.15]))
    hiss = _filter(rng.standard_normal(n), sr, low_hz=600, high_hz=3000)
    return (0.6 * squeal + _unit(hiss)) * gate * crescendo


# Traffic kind -> (vehicles passing per second, range), level of the nearby engine.
_TRAFFIC_MIX = {"flow": ((0.4, 1.0), 0.25), "passby": ((0.1, 0.25), 0.15), "idle": ((0.05, 0.2), 1.0)}


def _road_traffic(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Low rumble, a nearby engine whose rpm wanders, and vehicles passing by."""
    rate_range_hz, engine_level = _TRAFFIC_MIX[kind]
    k = np.arange(1, 17)
    engine_weights = np.where(k % 2 == 0, 1.0, rng.uniform(0.3, 0.7)) / k ** 0.8  # firing order
    f0 = rng.uniform(30, 120) * (1 + 0.12 * _smooth_random(rng, n, sr, rate_hz=0.4))
    # Mechanical noise, pulsed by the firing: what makes an engine more than a hum.
    firing = np.sin(4 * np.pi * np.cumsum(f0) / sr)
    clatter = _unit(_filter(rng.standard_normal(n), sr, low_hz=150, high_hz=2500)) * (1 + 0.7 * firing)
    engine = _unit(harmonic_tone(f0, sr, engine_weights)) + rng.uniform(0.1, 0.25) * clatter
    engine *= 1 + 0.2 * _smooth_random(rng, n, sr, rate_hz=3)
    vehicles = _vehicles(rng, n, sr, rate_hz=rng.uniform(*rate_range_hz), at_least_one=kind == "passby",
                         engine_weights=engine_weights[:8])
    return _rumble(rng, n, sr) + engine_level * engine + vehicles


def _rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS low-passed brown noise, slowly breathing: the bed of any road."""
    rumble = _unit(_filter(colored_noise(rng, n, exponent=2.0), sr, high_hz=rng.uniform(150, 400)))
    return rumble * (1 + 0.3 * _smooth_random(rng, n, sr, rate_hz=0.3))


def _vehicles(rng: np.random.Generator, n: int, sr: int, *, rate_hz: float, at_least_one: bool,
              engine_weights: np.ndarray | None) -> np.ndarray:
    """Vehicles passing at random times: tyre noise swelling with 1/distance, hiss only when
    close, and (when engine_weights are given) each engine's harmonics with Doppler."""
    t = np.arange(n) / sr
    count = max(int(at_least_one), int(rng.poisson(rate_hz * n / sr)))
    near, close, engines = np.zeros(n), np.zeros(n), np.zeros(n)
    for _ in range(count):
        ratio, loudness = _passby(t, t0_s=rng.uniform(-1, n / sr + 1), speed_m_s=rng.uniform(8, 25),
                                  closest_m=rng.uniform(3, 20))
        loudness *= rng.uniform(0.4, 1.0)
        near += loudness
        close += loudness ** 2
        active = np.flatnonzero(loudness > 0.05)
        if engine_weights is not None and len(active):
            window = slice(active[0], active[-1] + 1)
            car_f0 = rng.uniform(40, 110) * ratio[window]
            engines[window] += loudness[window] * harmonic_tone(car_f0, sr, engine_weights)
    tyres = _filter(colored_noise(rng, n, exponent=1.5), sr, low_hz=80, high_hz=1500)
    hiss = _filter(rng.standard_normal(n), sr, low_hz=2000, high_hz=5000)
    engines /= max(np.max(np.abs(engines)), 1e-9)
    return _unit(tyres) * near + 0.15 * _unit(hiss) * close + 0.5 * engines


def _scream(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """One scream somewhere in the clip, or screams repeated until the clip is full."""
    dur = n / sr
    out = np.zeros(n)
    cursor = rng.uniform(0.1, max(0.2, dur - 2.2)) if kind == "single" else rng.uniform(0.1, 0.6)
    while cursor < dur - 0.6:
        m = int(min(rng.uniform(0.5, 2.0), dur - 0.1 - cursor) * sr)
        i0 = int(cursor * sr)
        out[i0:i0 + m] += _one_scream(rng, m, sr)
        if kind == "single":
            break
        cursor += m / sr + rng.uniform(0.2, 1.0)
    return out


def _one_scream(rng: np.random.Generator, m: int, sr: int) -> np.ndarray:
    """m samples of scream: rising-falling f0 (300-1200 Hz) with vibrato, jitter and shimmer,
    a bright harmonic source through three vowel formants, plus breath noise."""
    t = np.arange(m) / sr
    start, peak, end = rng.uniform(300, 500), rng.uniform(600, 1200), rng.uniform(300, 600)
    peak_at, hold = rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.4)
    contour = PchipInterpolator([0, peak_at, peak_at + hold, 1],
                                [start, peak, peak * rng.uniform(0.85, 1.0), end])(t / t[-1])
    vibrato = 1 + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * rng.uniform(5, 8) * t)
    jitter = 1 + rng.uniform(0.005, 0.015) * _smooth_random(rng, m, sr, rate_hz=40)
    f0 = contour * vibrato * jitter
    source = harmonic_tone(f0, sr, np.arange(1, 15) ** -rng.uniform(0.8, 1.4))
    if rng.random() < 0.4:  # roughness: a subharmonic from period doubling
        source *= 1 + 0.3 * np.sin(np.pi * np.cumsum(f0) / sr)
    vowels = np.array([(800, 1200, 2600), (700, 1700, 2700), (450, 2200, 3000)])
    formants = vowels[rng.integers(len(vowels))] * rng.uniform(0.95, 1.2)
    voiced = 0.2 * source
    for f, gain in zip(formants, (1.0, 0.7, 0.4)):
        half_width = rng.uniform(80, 200)
        voiced += gain * _filter(source, sr, low_hz=f - half_width, high_hz=f + half_width, order=2)
    breath = _filter(rng.standard_normal(m), sr, low_hz=1000, high_hz=6000)
    shimmer = 1 + rng.uniform(0.05, 0.1) * _smooth_random(rng, m, sr, rate_hz=30)
    attack, release = rng.uniform(0.03, 0.08), rng.uniform(0.1, 0.3)
    effort = np.clip(0.6 + 0.4 * (contour - start) / (peak - start), 0.3, 1.0)  # louder when higher
    envelope = np.clip(t / attack, 0, 1) * np.clip((t[-1] - t) / release, 0, 1) * effort * shimmer
    return (_unit(voiced) + rng.uniform(0.05, 0.15) * _unit(breath)) * envelope


def _environment(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Rain, wind, birdsong or insects; or a steady tonal drone (the ambiguous A3 case)."""
    return {"rain": _rain, "wind": _wind, "birds": _birds, "insects": _insects,
            TONAL_DRONE: _tonal_drone}[kind](rng, n, sr)


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Dense droplets (click + small rising bubble resonance) over a filtered noise wash."""
    wash = _filter(colored_noise(rng, n, exponent=1.0), sr, low_hz=rng.uniform(400, 800), high_hz=7000)
    rate = rng.uniform(300, 2000)
    count = int(rate * n / sr)
    times, amps = rng.uniform(0, n / sr, count), rng.lognormal(0, 0.7, count)
    voices = rng.integers(0, 8, count)
    drops = np.zeros(n)
    kt = np.arange(int(0.03 * sr)) / sr
    for voice in range(8):
        f = rng.uniform(1000, 4000) * (1 + rng.uniform(0.2, 0.5) * kt / kt[-1])
        bubble = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-kt / rng.uniform(0.004, 0.015))
        bubble[: int(0.001 * sr)] += rng.standard_normal(int(0.001 * sr))
        mine = voices == voice
        drops += signal.oaconvolve(_impulses(n, sr, times[mine], amps[mine]), bubble)[:n]
    return rng.uniform(0.5, 1.0) * _unit(wash) + _unit(drops)


def _wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low-passed noise in gusts: louder gusts are also brighter."""
    base = colored_noise(rng, n, exponent=1.5)
    dark = _unit(_filter(base, sr, high_hz=rng.uniform(150, 300)))
    bright = _unit(_filter(base, sr, low_hz=300, high_hz=rng.uniform(800, 1500)))
    gust = 0.6 + 0.4 * _smooth_random(rng, n, sr, rate_hz=rng.uniform(0.2, 0.6))
    return dark * gust + 0.5 * bright * gust ** 3


def _birds(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """One to three birds singing phrases of fast FM syllables (2-8 kHz) over soft wind."""
    out = 0.05 * _wind(rng, n, sr)
    for _ in range(int(rng.integers(1, 4))):
        out += rng.uniform(0.3, 1.0) * _bird_song(rng, n, sr)
    return out


def _bird_song(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    limit = 0.45 * sr
    base = rng.uniform(2500, 5000)
    freq, segments = np.full(n, base), []
    cursor = rng.uniform(0, 1.0)
    while cursor < dur - 0.5:
        syllable = rng.choice(["down", "up", "trill", "whistle"])
        length = rng.uniform(0.1, 0.3) if syllable in ("trill", "whistle") else rng.uniform(0.03, 0.1)
        repeats = int(rng.integers(2, 8))
        gap = rng.uniform(0.02, 0.08)
        top = min(base * rng.uniform(1.2, 1.8), limit)
        for r in range(repeats):
            start = cursor + r * (length + gap)
            i0, i1 = int(start * sr), min(n, int((start + length) * sr))
            if i1 <= i0:
                break
            u = np.linspace(0, 1, i1 - i0)
            shape = {"down": top - (top - base) * u, "up": base + (top - base) * u,
                     "trill": base * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(20, 40) * u * length)),
                     "whistle": base * (1 + 0.08 * u)}[syllable]
            _place_contour(freq, i0, shape, hold=int(0.008 * sr))
            segments.append((start, length))
        cursor += repeats * (length + gap) + rng.uniform(0.5, 2.5)
    gate = gate_envelope(n, sr, segments, ramp_s=0.008)
    return harmonic_tone(np.clip(freq, 1500, limit), sr, np.array([1.0, 0.1])) * gate


def _insects(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Cicada (4-7 kHz noise band pulsed at 20-60 Hz, swelling) or cricket (pure chirps)."""
    t = np.arange(n) / sr
    center = min(rng.uniform(4000, 7000), 0.4 * sr)
    if rng.random() < 0.5:
        band = _filter(rng.standard_normal(n), sr, low_hz=center - 400, high_hz=center + 400)
        pulses = np.abs(np.sin(np.pi * rng.uniform(20, 60) * t)) ** 3
        swell = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
        return _unit(band) * pulses * (0.3 + 0.7 * swell) + 0.03 * _wind(rng, n, sr)
    pulse_rate, per_chirp = rng.uniform(25, 40), int(rng.integers(3, 6))
    segments = [(c + p / pulse_rate, 0.5 / pulse_rate)
                for c in np.arange(rng.uniform(0, 0.3), n / sr, 1 / rng.uniform(1.5, 3.0))
                for p in range(per_chirp)]
    tone = harmonic_tone(np.full(n, min(center, 5000.0)), sr, np.array([1.0, 0.05]))
    return tone * gate_envelope(n, sr, segments, ramp_s=0.004) + 0.03 * _wind(rng, n, sr)


def _tonal_drone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A steady hum/whine at siren pitch: no sweep, no amplitude modulation (A3 'ambiguous')."""
    f = rng.uniform(600, 1500) * (1 + 0.001 * _smooth_random(rng, n, sr, rate_hz=0.5))
    k = np.arange(1, 7)
    return harmonic_tone(f, sr, k ** -rng.uniform(1.2, 2.0))


_SYNTHS = {SIRENS: _siren, COLLISION: _collision, ALERT: _alert, TRAFFIC: _road_traffic,
           SCREAM: _scream, ENVIRONMENT: _environment}


# --- backgrounds ---------------------------------------------------------------------------

def _traffic_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Street traffic heard from a distance: rumble and tyre noise swelling, dark."""
    vehicles = _vehicles(rng, n, sr, rate_hz=rng.uniform(0.4, 1.0), at_least_one=False, engine_weights=None)
    return _filter(_rumble(rng, n, sr) + vehicles, sr, high_hz=rng.uniform(2000, 4000))


def _room_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Room tone: darkened pink noise plus a little mains hum (50 or 60 Hz and harmonics)."""
    hum = harmonic_tone(np.full(n, float(rng.choice([50.0, 60.0]))), sr, np.array([1, 0.5, 0.3, 0.2]))
    air = _filter(colored_noise(rng, n, exponent=1.0), sr, high_hz=rng.uniform(1500, 4000))
    return _unit(air) + 0.2 * hum


def _outdoor_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Open air: soft wind and a far-away traffic rumble."""
    rumble = _filter(colored_noise(rng, n, exponent=2.0), sr, high_hz=300)
    return _unit(_wind(rng, n, sr)) + 0.5 * _unit(rumble)


_BACKGROUNDS = {"traffic": _traffic_background, "room": _room_background, "outdoor": _outdoor_background}
