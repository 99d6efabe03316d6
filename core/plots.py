"""Evaluation pictures saved as PNG per run: confusion matrices (and their differences),
training curves, reliability diagrams (one model's, or several detectors' side by side),
psychometric curves (one, or several on one axes), metadata breakdowns, grouped bars and a
study's spread over seeds.

Each function draws on its own matplotlib `Figure` with an Agg canvas (never pyplot, so no
global state and nothing left open), writes `path` and returns it as a `Path`. Inputs are the
plain structures that `core.evaluate` returns.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.evaluate import psychometric_accuracy

DPI = 120
# Above this many classes the cells are too small for numbers; the colours still read.
MAX_ANNOTATED_CLASSES = 20


def plot_confusion(path: str | Path, *, matrix: Sequence[Sequence[float]], labels: Sequence[str],
                   normalized: bool, title: str = "") -> Path:
    """Confusion matrix: rows = true class, columns = predicted class.

    matrix: C x C counts, or row-normalised fractions in [0, 1] when `normalized` (cells are
    then annotated as percentages of the true class).
    """
    matrix = _square_matrix("matrix", matrix, labels)
    if normalized and ((matrix < 0) | (matrix > 1)).any():
        raise ValueError("matrix: normalized=True needs fractions in [0, 1]; pass normalized=False for counts")
    if not normalized and (matrix < 0).any():
        raise ValueError("matrix: counts must not be negative (use plot_confusion_diff for differences)")
    if normalized:
        norm, cell_text = Normalize(vmin=0.0, vmax=1.0), (lambda v: f"{v:.0%}")
    else:
        norm, cell_text = Normalize(vmin=0.0, vmax=max(float(matrix.max()), 1.0)), (lambda v: f"{v:.0f}")
    default_title = "Confusion matrix (share of each true class)" if normalized else "Confusion matrix (clips)"
    fig = _matrix_figure(matrix, labels, cmap="Blues", norm=norm, cell_text=cell_text,
                         colorbar_label="share of true class" if normalized else "clips",
                         whole_numbers=not normalized)
    fig.suptitle(title or default_title)
    return _save(fig, path)


def plot_confusion_diff(path: str | Path, *, diff: Sequence[Sequence[float]], labels: Sequence[str],
                        title: str = "") -> Path:
    """Candidate minus baseline confusion counts (`compare_reports()["confusion_diff"]`), on a
    diverging colour map centred at 0: on the diagonal red = more clips right, off it red =
    more of that mistake."""
    diff = _square_matrix("diff", diff, labels)
    limit = max(float(np.abs(diff).max()), 1.0)
    fig = _matrix_figure(diff, labels, cmap="RdBu_r", norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit),
                         cell_text=lambda v: f"{v:+.0f}" if v else "", colorbar_label="candidate - baseline (clips)",
                         whole_numbers=True)
    fig.suptitle(title or "Confusion change (candidate - baseline)")
    return _save(fig, path)


def plot_training_curves(path: str | Path, *, history: Sequence[dict[str, Any]]) -> Path:
    """Losses (left) and validation metrics (right) per epoch.

    history: one dict per epoch, e.g. {"epoch": 1, "step": .., "lr": .., "train_loss": ..,
    "val_loss": .., "val_accuracy": .., "val_f1_macro": ..}; see `training_curve_panels`.
    """
    panels = training_curve_panels(history)
    fig = _new_figure(11, 4)
    for ax, (panel_title, panel_series) in zip(fig.subplots(1, 2), panels.items()):
        for name, (series_epochs, values) in panel_series.items():
            ax.plot(series_epochs, values, marker="o", label=name)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if panel_series:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def training_curve_panels(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[list[Any], list[float]]]]:
    """{panel: {series: (epochs, values)}}: keys ending in "loss" go to the loss panel, other
    "val_" keys to the validation panel; bookkeeping (step, lr, stage) is not drawn. A key
    missing (or None) in some rows is drawn through the rows that have it. Without "epoch" the
    row number (from 1) is used."""
    history = list(history)
    if not history or not all(isinstance(row, dict) for row in history):
        raise ValueError(f"history: expected a non-empty list of dicts (one per epoch), got {history!r:.80}")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    series = _numeric_series(history, epochs)
    return {
        "loss": {k: v for k, v in series.items() if k.endswith("loss")},
        "validation metrics": {k: v for k, v in series.items() if k.startswith("val_") and not k.endswith("loss")},
    }


def plot_reliability(path: str | Path, *, bins: Sequence[dict[str, Any]], ece: float | None = None) -> Path:
    """Reliability diagram from `classification_report()["calibration"]["bins"]`: accuracy per
    top-1-confidence bin against the diagonal of perfect calibration, the gap to each bin's
    mean confidence, and the clips per bin below."""
    bins = _reliability_bins(bins)
    fig = _new_figure(6, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    _draw_reliability(top, bottom, bins, title="Reliability" + (f" (ECE {ece:.1%})" if ece is not None else ""),
                      xlabel="confidence (top-1 probability)", ylabel="accuracy", gap="gap to mean confidence")
    return _save(fig, path)


def plot_reliability_grid(path: str | Path, *, calibrations: dict[str, dict[str, Any]], columns: int = 3) -> Path:
    """One reliability diagram per detector, side by side: the share of positive (speech)
    clips per score bin against the diagonal, from `core.evaluate.score_calibration` results
    ({name: {ece, mce, bins}}), each titled with its ECE and MCE."""
    if not calibrations or not all(isinstance(c, dict) and {"ece", "mce", "bins"} <= set(c) for c in calibrations.values()):
        raise ValueError("calibrations: expected {name: score_calibration result} with at least one entry")
    _check_positive("columns", columns)
    columns = min(columns, len(calibrations))
    rows = -(-len(calibrations) // columns)
    fig = _new_figure(4.2 * columns, 4.6 * rows)
    panels = np.atleast_1d(fig.subfigures(rows, columns)).ravel()
    for panel, (name, calibration) in zip(panels, calibrations.items()):
        top, bottom = panel.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        _draw_reliability(top, bottom, _reliability_bins(calibration["bins"]),
                          title=f"{name}\nECE {calibration['ece']:.1%}, MCE {calibration['mce']:.1%}",
                          xlabel="score (read as p(speech))", ylabel="share of speech clips", gap="gap to mean score")
    return _save(fig, path)


def _reliability_bins(bins: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    bins = list(bins)
    required = {"lower", "upper", "count", "confidence", "accuracy"}
    if not bins or not all(isinstance(b, dict) and required <= set(b) for b in bins):
        raise ValueError(f"bins: expected a non-empty list of dicts with keys {sorted(required)}")
    return bins


def _draw_reliability(top: Any, bottom: Any, bins: list[dict[str, Any]], *, title: str, xlabel: str, ylabel: str,
                      gap: str) -> None:
    """Observed rate per bin (top) against the diagonal, with the gap to the bin's mean score,
    and the clips per bin (bottom)."""
    lower = np.array([b["lower"] for b in bins], dtype=float)
    width = np.array([b["upper"] for b in bins], dtype=float) - lower
    counts = np.array([b["count"] for b in bins], dtype=int)
    filled = counts > 0
    accuracy = np.array([b["accuracy"] or 0.0 for b in bins], dtype=float)
    confidence = np.array([b["confidence"] or 0.0 for b in bins], dtype=float)
    top.bar(lower[filled], accuracy[filled], width=width[filled], align="edge",
            color="tab:blue", edgecolor="black", label=ylabel)
    # Hatched, unfilled gap bars stay readable where they overlap an accuracy bar (underconfidence).
    top.bar(lower[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=width[filled],
            align="edge", fill=False, hatch="//", edgecolor="tab:red", label=gap)
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel=ylabel)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title)

    bottom.bar(lower, counts, width=width, align="edge", color="tab:gray", edgecolor="black")
    for x, w, n in zip(lower[filled], width[filled], counts[filled]):
        bottom.annotate(str(n), (x + w / 2, n), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 1), textcoords="offset points")
    bottom.set(xlabel=xlabel, ylabel="clips", ylim=(0, max(counts.max(), 1) * 1.25))


def plot_psychometric(path: str | Path, *, curve: dict[str, Any], xlabel: str = "SNR (dB)", title: str = "") -> Path:
    """Accuracy per level (dots sized by trials) with the fitted logistic and the DT50/DT75
    marks, from `core.evaluate.psychometric_curve`."""
    required = {"levels", "accuracy", "n", "params", "dt50", "dt75"}
    if not isinstance(curve, dict) or not required <= set(curve):
        raise ValueError(f"curve: expected a psychometric_curve result with keys {sorted(required)}")
    levels = np.asarray(curve["levels"], dtype=float)
    counts = np.asarray(curve["n"], dtype=float)
    params = curve["params"]
    margin = 0.1 * (levels.max() - levels.min())
    smooth = np.linspace(levels.min() - margin, levels.max() + margin, 200)

    fig = _new_figure(7, 4.5)
    ax = fig.add_subplot()
    ax.scatter(levels, 100 * np.asarray(curve["accuracy"]), s=20 + 80 * counts / counts.max(),
               color="tab:blue", zorder=3, label="measured (size = trials)")
    ax.plot(smooth, 100 * psychometric_accuracy(smooth, **params), color="tab:blue", label="logistic fit")
    ax.axhline(100 * params["chance"], color="gray", linestyle=":", label="chance")
    for name, target, colour in (("DT50", 50, "tab:orange"), ("DT75", 75, "tab:green")):
        level = curve[name.lower()]
        if level is None:
            continue
        ax.plot([level, level], [0, target], color=colour, linestyle="--")
        ax.plot([smooth[0], level], [target, target], color=colour, linestyle="--")
        ax.annotate(f"{name} = {level:.1f}", (level, target), xytext=(6, -14), textcoords="offset points",
                    color=colour, fontsize=9)
    ax.set(xlim=(smooth[0], smooth[-1]), ylim=(0, 102), xlabel=xlabel, ylabel="accuracy (%)",
           title=title or "Psychometric curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_psychometric_curves(path: str | Path, *, curves: dict[str, dict[str, Any]], xlabel: str = "SNR (dB)",
                             title: str = "") -> Path:
    """Several psychometric curves on one axes (one colour per name: measured accuracy per level
    as dots, the fitted logistic as a line, DT50 as a cross on it, chance dotted), from
    `core.evaluate.psychometric_curve` results {name: curve} (or ones whose dt50 / dt75 another
    convention placed: the cross sits on the curve); the legend gives each DT50 / DT75."""
    required = {"levels", "accuracy", "params", "dt50", "dt75"}
    if not curves or not all(isinstance(c, dict) and required <= set(c) for c in curves.values()):
        raise ValueError(f"curves: expected {{name: psychometric_curve result}} with keys {sorted(required)}")
    every_level = np.concatenate([np.asarray(c["levels"], dtype=float) for c in curves.values()])
    margin = 0.1 * (every_level.max() - every_level.min())
    smooth = np.linspace(every_level.min() - margin, every_level.max() + margin, 200)
    fig = _new_figure(8, 5)
    ax = fig.add_subplot()
    low, high = every_level.min(), every_level.max()
    for index, (name, curve) in enumerate(curves.items()):
        colour = f"C{index % 10}"
        # A threshold beyond the tested levels is an extrapolation: say only on which side it lies.
        dt = ", ".join(f"{key.upper()} " + (f"< {low:g}" if curve[key] < low else f"> {high:g}" if curve[key] > high
                                            else f"{curve[key]:.1f}") for key in ("dt50", "dt75") if curve[key] is not None)
        ax.plot(smooth, 100 * psychometric_accuracy(smooth, **curve["params"]), color=colour,
                label=f"{name}" + (f" ({dt})" if dt else ""))
        ax.scatter(curve["levels"], 100 * np.asarray(curve["accuracy"]), color=colour, s=18, zorder=3)
        if curve["dt50"] is not None and smooth[0] <= curve["dt50"] <= smooth[-1]:
            height = 100 * psychometric_accuracy(curve["dt50"], **curve["params"])
            ax.plot([curve["dt50"]], [height], marker="x", color=colour, markersize=9, zorder=4)
    for chance in sorted({c["params"]["chance"] for c in curves.values()}):
        ax.axhline(100 * chance, color="gray", linestyle=":", linewidth=1)
    ax.set(xlim=(smooth[0], smooth[-1]), ylim=(0, 102), xlabel=xlabel, ylabel="accuracy (%)",
           title=title or "Psychometric curves")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_metric_by_group(path: str | Path, *, groups: Sequence[str], series: dict[str, Sequence[float | None]],
                         ylabel: str, title: str = "") -> Path:
    """Grouped bars: one group per entry of groups (e.g. SNR levels), one bar per series (e.g.
    detector) in each, values in [0, 1] drawn as percentages and labelled; None leaves a gap."""
    groups = list(groups)
    if not groups or not series or not all(len(values) == len(groups) for values in series.values()):
        raise ValueError(f"series: expected {{name: one value per group}} for the {len(groups)} groups")
    width = 0.8 / len(series)
    positions = np.arange(len(groups))
    fig = _new_figure(max(6.0, 1.2 * len(groups) * max(1, len(series) / 3)), 4.5)
    ax = fig.add_subplot()
    for index, (name, values) in enumerate(series.items()):
        x = positions - 0.4 + width * (index + 0.5)
        heights = np.array([np.nan if v is None else 100 * v for v in values], dtype=float)
        bars = ax.bar(x, heights, width=width, color=f"C{index % 10}", edgecolor="black", label=name)
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.0f}" for h in heights], fontsize=6, padding=1)
    ax.set_xticks(positions, groups)
    ax.set(ylim=(0, 125), ylabel=f"{ylabel} (%)", title=title)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(4, len(series)), loc="upper center")
    return _save(fig, path)


def plot_spread(path: str | Path, *, values: dict[str, Sequence[float]], ylabel: str, title: str = "") -> Path:
    """One bar per entry (a study's configs in rank order, or its folds): the mean of its values
    (one per seed, in [0, 1], drawn as percentages), an error bar of one standard deviation,
    and each value as a dot, so one lucky seed is seen as one. An entry without values is an
    empty slot labelled "no result"."""
    if not values:
        raise ValueError("values: expected {name: one value per seed} with at least one name")
    names = list(values)
    fig = _new_figure(max(6.0, 0.9 * len(names) + 2.0), 4.8)
    ax = fig.add_subplot()
    for x, name in enumerate(names):
        points = 100 * np.asarray([v for v in values[name] if _is_number(v)], dtype=float)
        if not len(points):
            ax.annotate("no result", (x, 2), ha="center", fontsize=8, rotation=90)
            continue
        std = float(points.std(ddof=1)) if len(points) > 1 else 0.0
        ax.bar(x, points.mean(), width=0.6, color="tab:blue", alpha=0.6, edgecolor="black",
               yerr=std, capsize=4, error_kw={"elinewidth": 1.2})
        ax.scatter(np.full(len(points), x), points, color="black", s=14, zorder=3)
        ax.annotate(f"{points.mean():.1f}", (x + 0.3, points.mean()), xytext=(2, 0), textcoords="offset points",
                    ha="left", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30 if max(len(n) for n in names) > 8 else 0, ha="right", fontsize=8)
    ax.set(ylim=(0, 105), ylabel=f"{ylabel} (%)", title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_breakdowns(path: str | Path, *, breakdowns: dict[str, dict[str, Any]], title: str = "") -> Path:
    """Accuracy per group of each metadata column (one panel per column, bars labelled with
    their clip counts), from `BreakdownPlan.report`; the dashed line is the split's accuracy
    over all its clips, so a weak group stands out."""
    if not breakdowns or not all(isinstance(b, dict) and b.get("groups") for b in breakdowns.values()):
        raise ValueError("breakdowns: expected {column: {groups: {group: {n, accuracy}}}} with at least one group each")
    sizes = [len(b["groups"]) for b in breakdowns.values()]
    fig = _new_figure(7, 1.0 + 0.38 * sum(sizes) + 0.5 * len(sizes))
    axes = fig.subplots(len(sizes), 1, height_ratios=[s + 1 for s in sizes], squeeze=False)[:, 0]
    for ax, (column, entry) in zip(axes, breakdowns.items()):
        names = list(entry["groups"])
        counts = np.array([entry["groups"][g]["n"] for g in names])
        accuracy = np.array([entry["groups"][g]["accuracy"] for g in names]) * 100
        positions = np.arange(len(names))[::-1]
        ax.barh(positions, accuracy, color="tab:blue", edgecolor="black")
        for y, value, n in zip(positions, accuracy, counts):
            ax.annotate(f"{value:.1f}%  (n={n})", (value, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.axvline(float(np.average(accuracy, weights=counts)), color="gray", linestyle="--")
        ax.set(yticks=positions, yticklabels=names, xlim=(0, 125), title=column)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.tick_params(axis="y", labelsize=8)
    axes[-1].set_xlabel("accuracy (%); dashed line: all clips of the split")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --- shared drawing ----------------------------------------------------------------------------

def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _matrix_figure(matrix: np.ndarray, labels: Sequence[str], *, cmap: str, norm: Normalize,
                   cell_text: Any, colorbar_label: str, whole_numbers: bool) -> Figure:
    """A C x C heat map with true classes down the side and predicted classes along the bottom."""
    n = len(labels)
    side_in = float(np.clip(0.6 * n + 3.0, 5.0, 24.0))
    # Text about half a cell high, between 5 and 10 pt (the axes take ~3/4 of the figure side).
    fontsize = float(np.clip(0.45 * 72 * 0.75 * side_in / n, 5.0, 10.0))
    fig = _new_figure(side_in + 1.0, side_in)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap=cmap, norm=norm)
    # Long class names (emergency_sirens) collide when horizontal; tilt them and anchor the
    # end of each name under its column; many columns need them upright to fit side by side.
    tilt = n > 8 or max(len(label) for label in labels) > 6
    rotation = (90 if n > MAX_ANNOTATED_CLASSES else 45) if tilt else 0
    ax.set_xticks(range(n), labels, fontsize=fontsize, rotation=rotation,
                  ha="right" if tilt else "center", va="center" if rotation == 90 else "top",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= MAX_ANNOTATED_CLASSES:
        for (row, col), value in np.ndenumerate(matrix):
            red, green, blue, _ = image.cmap(image.norm(value))
            dark_cell = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(col, row, cell_text(value), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark_cell else "black")
    colorbar = fig.colorbar(image, ax=ax, label=colorbar_label, shrink=0.8)
    if whole_numbers:  # clip counts: no 0.5-clip ticks
        colorbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _square_matrix(name: str, matrix: Sequence[Sequence[float]], labels: Sequence[str]) -> np.ndarray:
    array = np.asarray(matrix, dtype=float)
    n = len(labels)
    if n == 0 or array.shape != (n, n) or not np.isfinite(array).all():
        raise ValueError(f"{name}: expected a {n} x {n} matrix of finite numbers (one row and column per "
                         f"label), got shape {array.shape}")
    return array


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: {value!r} must be a positive integer")


def _numeric_series(history: list[dict[str, Any]], epochs: list[Any]) -> dict[str, tuple[list[Any], list[float]]]:
    """Every numeric key except epoch -> (epochs, values) over the rows that record it."""
    keys = dict.fromkeys(k for row in history for k, v in row.items() if k != "epoch" and _is_number(v))
    return {k: ([e for e, row in zip(epochs, history) if _is_number(row.get(k))],
                [float(row[k]) for row in history if _is_number(row.get(k))])
            for k in keys}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
