"""Export the corrected manifest: every clip with its current label and where that label came from.

Why a manifest and not a copy of the audio: the corrected dataset is the original audio plus the
decision log, so the export is one table (CSV or Parquet) that names each file by absolute path
with its label as of a decision id, whether it is excluded or quarantined, and the provenance of
its state (the last effective decision: id, annotator, action, tag, rule, time). The column names
are the ones `earmark import` understands (path, label, split, group, fold, duration_s), so an
export can be imported into another session as a manifest. Exporting "as of" an older decision
rebuilds exactly the labels a run was trained on.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from core.relabel_rules import dump_rules
from core.store import Store

FORMATS = ("csv", "parquet")
COLUMNS = ["clip_id", "dataset", "path", "label", "original_label", "relabelled", "excluded", "quarantined",
           "split", "fold", "group", "duration_s", "sample_rate_hz", "status", "reason", "parent_clip_id",
           "last_decision_id", "last_annotator", "last_action", "last_tag", "last_rule", "last_decided_at",
           "as_of_decision_id"]


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    path: Path
    format: str
    rows: int
    as_of_decision_id: int
    relabelled: int
    excluded: int
    quarantined: int
    unreadable: int
    rules_path: Path
    rules: int

    def lines(self) -> list[str]:
        return [f"wrote {self.rows} clips as of decision {self.as_of_decision_id} to {self.path} ({self.format})",
                f"  relabelled {self.relabelled}, excluded {self.excluded}, quarantined {self.quarantined}, "
                f"unreadable {self.unreadable}",
                f"  the session's {self.rules} relabel rules to {self.rules_path} (`earmark import --relabel-rules` reads it)"]


def rules_path_for(manifest_path: Path) -> Path:
    """The rules file written beside a manifest: manifest.csv -> manifest.rules.yaml."""
    return manifest_path.with_name(f"{manifest_path.stem}.rules.yaml")


def default_export_path(store: Store, *, format: str, as_of: int | None = None) -> Path:
    """sessions/<name>/exports/manifest-asof-<id>.<format>: one file per state of the log."""
    _check_format(format)
    as_of = store.last_decision_id() if as_of is None else int(as_of)
    return Path(store.session_dir) / "exports" / f"manifest-asof-{as_of}.{format}"


def export_manifest(store: Store, path: str | Path, *, format: str | None = None,
                    as_of: int | None = None) -> ExportSummary:
    """Write the manifest of every clip (COLUMNS) as of decision `as_of` (default: now) to path.

    format: "csv" or "parquet"; None takes it from the file suffix. The file is written beside
    its final name and renamed into place, so a failed export never leaves half a manifest.
    """
    path = Path(path).expanduser()
    if format is None:
        format = path.suffix.lower().lstrip(".")
        if format not in FORMATS:
            raise ValueError(f"format: cannot tell it from {path.name!r}; pass one of {', '.join(FORMATS)} "
                             "or name the file .csv / .parquet")
    _check_format(format)
    latest = store.last_decision_id()
    as_of = latest if as_of is None else int(as_of)
    if not 0 <= as_of <= latest:
        raise ValueError(f"as_of: decision id {as_of} is outside this session's log (0..{latest})")
    table = manifest_table(store, as_of=as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if format == "csv":
        table.to_csv(partial, index=False)
    else:
        table.to_parquet(partial, index=False)
    os.replace(partial, path)
    # The rules say what each tag in last_tag did; they are the session's current set (edits are
    # not versioned), so a manifest and its rules travel together.
    rules = store.rules()
    rules_path = dump_rules(rules, rules_path_for(path))
    usable = table.status == "ok"
    return ExportSummary(path=path, format=format, rows=len(table), as_of_decision_id=as_of,
                         relabelled=int((table.relabelled & usable).sum()), excluded=int((table.excluded & usable).sum()),
                         quarantined=int((table.quarantined & usable).sum()), unreadable=int((~usable).sum()),
                         rules_path=rules_path, rules=len(rules))


def manifest_table(store: Store, *, as_of: int) -> pd.DataFrame:
    """The export as a DataFrame with COLUMNS, one row per clip that existed at as_of, by clip id."""
    state = store.labels(as_of=as_of)
    clips = store.clips().set_index("id")
    roots = {int(k): v for k, v in store.dataset_roots().items()}
    log = store.decisions().set_index("id")
    last = state.last_decision_id
    known = last.notna()
    provenance = log.reindex(last[known].astype("int64"))
    table = pd.DataFrame({
        "clip_id": state.clip_id.astype("int64"),
        "dataset": state.clip_id.map(clips["dataset"]),
        "path": [str(roots[int(d)] / p) for d, p in zip(state.dataset_id, state.path)],
        "label": state.label,
        "original_label": state.original_label,
        "relabelled": (state.label != state.original_label).fillna(False).astype(bool),
        "excluded": state.excluded.astype(bool),
        "quarantined": state.quarantined.astype(bool),
        "split": state.split,
        "fold": state.fold,
        "group": state.source_group,
        "duration_s": state.duration_s,
        "sample_rate_hz": state.clip_id.map(clips["sample_rate_hz"]).astype("Int64"),
        "status": state.status,
        "reason": state.clip_id.map(clips["reason"]),
        "parent_clip_id": state.parent_clip_id.astype("Int64"),
        "last_decision_id": last.astype("Int64"),
    })
    for column, source in (("last_annotator", "annotator"), ("last_action", "action"), ("last_tag", "tag"),
                           ("last_rule", "rule"), ("last_decided_at", "created_at")):
        values = pd.Series(pd.NA, index=table.index, dtype=object)
        values[known.to_numpy()] = provenance[source].to_numpy()
        table[column] = values
    table["as_of_decision_id"] = as_of
    return table[COLUMNS].sort_values("clip_id", ignore_index=True)


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
