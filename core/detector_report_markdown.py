"""The detector comparison report (core/detector_report.py) as Markdown: plan B9's matrix as
tables a paper can take as they are, the figures beside them, and notes on what is missing."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["render_markdown"]

DASH = "–"  # an undefined number (no clips, a curve that could not be fitted)


def render_markdown(report: dict[str, Any], *, images: dict[str, str] | None = None) -> str:
    """The whole report as Markdown; images: {REPORT_FILES key: file name} of the PNGs written beside it."""
    usable = {name: entry for name, entry in report["detectors"].items() if "error" not in entry}
    splits, clips = report["splits"], report["clips"]
    objective = report["objective"].replace("_", " ")
    parts = [
        "# Speech detectors compared (B9)",
        f"Test split `{splits['test']}` ({clips['test']} clips); dev split `{splits['dev']}` ({clips['dev']} clips). "
        f"Each detector's threshold maximises {objective} on dev and is applied unchanged to test (B5); "
        f"every number below is on test. A score is read as p({report['speech_label']}).",
        _section("Summary (test)", _summary(report, usable)),
        _section("Thresholds (B5)", _thresholds(usable)),
        _section("Confusion (test; true → predicted)", _confusion(report, usable)),
        *_breakdowns(report, usable),
        _section("Psychometric thresholds per duration (dB; DT50 / DT75)", _per_duration_dt(report, usable)),
        _section("Latency per clip (ms, p50 / p95)", _latency(usable)),
        _worst_clips(usable),
        _figures(images or {}),
        _section("Notes", "\n".join(f"- {note}" for note in _notes(report))),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _section(title: str, body: str) -> str:
    return f"## {title}\n\n{body}" if body else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str = "") -> str:
    """A Markdown table; align: "l" or "r" per column, by default the first column left (names)
    and the others right (numbers)."""
    if not rows:
        return ""
    align = align or "l" + "r" * (len(header) - 1)
    lines = [header, ["---:" if a == "r" else "---" for a in align], *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    return DASH if value is None else f"{value:{'+' if signed else ''}.{digits}f}"


def _dt(curve: dict[str, Any], key: str) -> str:
    """DT50 or DT75 with its bootstrap 95% interval, e.g. "-2.1 [-3.0, -1.2]"; a value beyond
    the tested SNRs is an extrapolation and reads "> 20" or "< -5"."""
    if "levels" not in curve or curve[key] is None:
        return DASH
    low, high = min(curve["levels"]), max(curve["levels"])

    def level(value: float) -> str:
        return f"< {low:g}" if value < low else f"> {high:g}" if value > high else f"{value:.1f}"

    interval = curve.get("interval_95", {}).get(key)
    return level(curve[key]) + (f" [{level(interval[0])}, {level(interval[1])}]" if interval else "")


def _summary(report: dict[str, Any], usable: dict[str, Any]) -> str:
    labels = (report["speech_label"], report["nonspeech_label"])
    header = ["detector", "accuracy", "balanced accuracy", *labels, "ECE", "MCE", "DT50 (dB) [95% CI]",
              "DT75 (dB) [95% CI]", "latency p50 (ms)"]
    rows = []
    for name, entry in usable.items():
        test, curve = entry["test"], entry["psychometric"]["overall"]
        rows.append([name, _pct(test["accuracy"]), _pct(test["balanced_accuracy"]),
                     *(_pct(test["per_class"][label]) for label in labels), _pct(test["calibration"]["ece"]),
                     _pct(test["calibration"]["mce"]), _dt(curve, "dt50"), _dt(curve, "dt75"),
                     _num(entry["latency_ms"]["total"]["p50"], 2)])
    return _table(header, rows)


def _thresholds(usable: dict[str, Any]) -> str:
    header = ["detector", "threshold (dev)", "test-optimal", "gap (dev - test)", "objective on dev",
              "on test at dev threshold", "at test-optimal", "lost"]
    rows = [[name, _num(t["dev"]), _num(t["test_optimal"]), _num(t["gap"], signed=True), _pct(t["dev_value"]),
             _pct(t["test_value_at_dev"]), _pct(t["test_optimal_value"]), _pct(t["test_value_lost"])]
            for name, t in ((name, entry["threshold"]) for name, entry in usable.items())]
    return _table(header, rows)


def _confusion(report: dict[str, Any], usable: dict[str, Any]) -> str:
    labels = (report["speech_label"], report["nonspeech_label"])
    header = ["detector", *(f"{truth} → {said}" for truth in labels for said in labels)]
    rows = [[name, *(str(n) for row in entry["test"]["confusion"]["counts"] for n in row)] for name, entry in usable.items()]
    return _table(header, rows)


def _breakdowns(report: dict[str, Any], usable: dict[str, Any]) -> list[str]:
    """Per SNR: balanced accuracy, accuracy and each class's accuracy; per duration: the first two."""
    speech, nonspeech = report["speech_label"], report["nonspeech_label"]
    metrics: list[tuple[str, Callable[[dict[str, Any]], float | None]]] = [
        ("Balanced accuracy", lambda row: row["balanced_accuracy"]), ("Accuracy", lambda row: row["accuracy"])]
    by_class = [(f"Accuracy on {label} clips", lambda row, label=label: row["per_class"][label])
                for label in (speech, nonspeech)]
    sections = []
    for key, column, unit, levels, chosen in (("per_snr", "snr_db", "dB", report["snr_levels"], metrics + by_class),
                                              ("per_duration", "duration_ms", "ms", report["durations_ms"], metrics)):
        if not levels:
            continue
        for title, metric in chosen:
            header = ["detector", *(f"{level:g} {unit}" for level in levels)]
            rows = []
            for name, entry in usable.items():
                by_level = {row[column]: row for row in entry["test"].get(key, [])}
                rows.append([name, *(_pct(metric(by_level[level])) if level in by_level else DASH for level in levels)])
            what = "SNR" if key == "per_snr" else "duration"
            sections.append(_section(f"{title} per {what} (test)", _table(header, rows)))
    return sections


def _per_duration_dt(report: dict[str, Any], usable: dict[str, Any]) -> str:
    durations = [f"{d:g}" for d in report["durations_ms"]]
    if not durations or not report["snr_levels"]:
        return ""
    header = ["detector", *(f"{d} ms" for d in durations)]
    rows = []
    for name, entry in usable.items():
        curves = entry["psychometric"].get("per_duration", {})
        rows.append([name, *(f"{_dt(curves.get(d, {}), 'dt50')} / {_dt(curves.get(d, {}), 'dt75')}" for d in durations)])
    return _table(header, rows)


def _latency(usable: dict[str, Any]) -> str:
    stages = ("load", "resample", "features", "model", "total")
    header = ["detector", *stages, "clips"]
    rows = [[name, *(f"{_num(entry['latency_ms'][s]['p50'], 2)} / {_num(entry['latency_ms'][s]['p95'], 2)}"
                     for s in stages), str(entry["latency_ms"]["clips"])] for name, entry in usable.items()]
    return _table(header, rows)


def _worst_clips(usable: dict[str, Any]) -> str:
    """Each detector's most confidently wrong test clips, with their ids for the workbench."""
    blocks = []
    for name, entry in usable.items():
        rows = [[str(c["clip_id"]), c["label"], c["predicted"], _num(c["score"]),
                 DASH if c.get("snr_db") is None else f"{c['snr_db']:g}",
                 DASH if c.get("duration_ms") is None else f"{c['duration_ms']:g}", f"`{c['path']}`" if "path" in c else DASH]
                for c in entry["worst_clips"]]
        table = _table(["clip", "label", "predicted", "score", "SNR (dB)", "duration (ms)", "file"], rows, align="lllrrrl")
        blocks.append(f"### {name}\n\n{table or 'no wrong clip on test'}")
    return _section("Worst clips (test; most confidently wrong first)", "\n\n".join(blocks))


def _figures(images: dict[str, str]) -> str:
    titles = {"psychometric": "Accuracy against SNR", "snr": "Balanced accuracy per SNR",
              "reliability": "Reliability (score read as p(speech))"}
    lines = [f"![{titles[key]}]({images[key]})" for key in titles if key in images]
    lines += [f"![Accuracy against SNR, {key.split('_')[1]} clips]({file})" for key, file in images.items()
              if key.startswith("psychometric_")]
    return _section("Figures", "\n\n".join(lines))


def _notes(report: dict[str, Any]) -> list[str]:
    notes = [f"{name}: not compared: {error}" for name, error in report.get("not_compared", {}).items()]
    for name, entry in report["detectors"].items():
        if "error" in entry:
            notes.append(f"{name}: not compared: {entry['error']}")
            continue
        unscored = {split: n for split, n in entry["unscored"].items() if n}
        if unscored:
            notes.append(f"{name}: clips it could not score are left out: "
                         + ", ".join(f"{n} in {split}" for split, n in unscored.items()))
        psychometric = entry["psychometric"]
        curves = {"overall": psychometric["overall"],
                  **{f"{d} ms": c for d, c in psychometric.get("per_duration", {}).items()}}
        for which, curve in curves.items():
            if "note" in curve:
                notes.append(f"{name}, {which}: {curve['note']}")
            elif curve["interval_95"]["failed"]:
                boot = curve["interval_95"]
                notes.append(f"{name}, {which}: {boot['failed']} of {boot['draws']} bootstrap fits failed and were skipped")
    notes.append("DT50 / DT75: the SNR at which a logistic fitted to accuracy against SNR has risen 50% / 75% of the "
                 "way from chance (50%) to perfect, i.e. 75% / 87.5% accuracy; '< lowest' or '> highest' when it "
                 "lies outside the SNRs measured.")
    notes.append("ECE / MCE read each score as p(speech). A VAD's score is its share of speech frames, not a "
                 "probability: its ECE says how far that share lies from the share of speech clips that score it.")
    return notes
