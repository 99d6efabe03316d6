"""Data: what is in the session and how it gets in and out.

Import a dataset from a path on the server (layouts and class maps as `earmark import`, with a
progress bar fed by the importer's own tqdm bars); the session's statistics (clips per class and
split, the duration histogram) and its unreadable files with their reasons; VAD hygiene, whose
failing speech / non-speech clips go to the Review queue (hygiene_panel.py); near-duplicates across
splits, queued beside their partners (duplicates_panel.py); a before/after
preview of augmentations on one clip; the session's relabel rules, editable with the checks a
rules file gets; the corrected manifest (current labels, exclusions, decision provenance)
exported as CSV or Parquet and offered as a download; and the inbox of unlabelled audio, ranked
by the model's uncertainty for the Review tab (inbox_panel.py).
"""
from __future__ import annotations

import html
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core.store import RULE_ACTIONS, Rule
from pipelines.export import FORMATS, default_export_path, export_manifest
from pipelines.importing import LAYOUTS, ClassMap, import_dataset
from pipelines.stats import duration_bin_names, session_stats
from workbench import augment_preview, duplicates_panel, expanded_test_panel, hygiene_panel, inbox_panel
from workbench.context import Workbench, safe

CLASS_MAPS_DIR = Path(__file__).resolve().parent.parent / "data" / "class_maps"
NO_CLASS_MAP = "(none: keep the dataset's classes)"
RULE_COLUMNS = ["hotkey", "tag", "action", "target label", "keeps quarantined", "description"]


@dataclass
class Layout:
    """The tab's components, so the wiring (and a reader) can name each one."""
    source: gr.Textbox
    dataset_layout: gr.Dropdown
    class_map: gr.Dropdown
    name: gr.Textbox
    group_pattern: gr.Textbox
    root: gr.Textbox
    keep_unmapped: gr.Checkbox
    seed: gr.Number
    import_button: gr.Button
    import_summary: gr.HTML
    totals: gr.Markdown
    refresh: gr.Button
    per_class: gr.Dataframe
    class_plot: gr.BarPlot
    durations: gr.BarPlot
    unreadable: gr.Dataframe
    rules: gr.Dataframe
    rule_tag: gr.Textbox
    rule_action: gr.Dropdown
    rule_target: gr.Dropdown
    rule_hotkey: gr.Textbox
    rule_keep: gr.Checkbox
    rule_description: gr.Textbox
    rule_save: gr.Button
    rule_message: gr.HTML
    export_format: gr.Radio
    export_button: gr.Button
    export_file: gr.File
    export_message: gr.HTML

    @property
    def stats_outputs(self) -> list[gr.Component]:
        """What show_stats fills."""
        return [self.totals, self.per_class, self.class_plot, self.durations, self.unreadable]

    @property
    def rule_form(self) -> list[gr.Component]:
        """The rule editor's fields, in the order pick_rule and save_rule use."""
        return [self.rule_tag, self.rule_action, self.rule_target, self.rule_hotkey, self.rule_keep,
                self.rule_description]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    downloads = Path(tempfile.mkdtemp(prefix="earmark-exports-"))  # Gradio serves files from the temp dir
    ui = layout(wb)
    wire(wb, ui, blocks=gr.context.Context.root_block, downloads=downloads)
    inbox_panel.build(wb, annotator=annotator)
    expanded_test_panel.build(wb, annotator=annotator)


def layout(wb: Workbench) -> Layout:
    gr.Markdown("### Import a dataset")
    with gr.Row(equal_height=True):
        source = gr.Textbox(label="dataset folder or manifest (a path on the server)", scale=4, elem_id="em-data-source",
                            placeholder="/data/ESC-50-master  or  /data/mine/manifest.csv")
        dataset_layout = gr.Dropdown(list(LAYOUTS), value="auto", label="layout", scale=1)
        class_map = gr.Dropdown([NO_CLASS_MAP, *(str(p) for p in sorted(CLASS_MAPS_DIR.glob("*.yaml")))],
                                value=NO_CLASS_MAP, allow_custom_value=True, label="class map (or type a YAML path)", scale=3)
    with gr.Row(equal_height=True):
        name = gr.Textbox(label="dataset name (default: folder or manifest name)", scale=2)
        group_pattern = gr.Textbox(label="source-group regex on file names (first group)", scale=2,
                                   placeholder=r"^(\w+)-\d+\.wav$")
        root = gr.Textbox(label="root that manifest paths are relative to (default: its folder)", scale=2)
        keep_unmapped = gr.Checkbox(label="keep classes the map does not list", scale=1)
        seed = gr.Number(0, label="split seed", precision=0, minimum=0, scale=1)
        import_button = gr.Button("Import", variant="primary", scale=1, elem_id="em-data-import")
    import_summary = gr.HTML(elem_id="em-data-import-summary")

    gr.Markdown("### Dataset statistics")
    with gr.Row(equal_height=True):
        totals = gr.Markdown(elem_id="em-data-totals")
        refresh = gr.Button("Refresh statistics", size="sm", scale=0, min_width=160)
    with gr.Row():
        # Wider than each chart: at a third of the row its last column (total) was clipped.
        per_class = gr.Dataframe(label="usable clips per class and split (current labels)", interactive=False,
                                 wrap=True, scale=4, elem_id="em-data-per-class")
        class_plot = gr.BarPlot(x="class", y="clips", color="split", x_title="class", y_title="clips", y_lim=[0, None],
                                title="clips per class and split", x_label_angle=-30, height=320, scale=4)
        durations = gr.BarPlot(x="duration", y="clips", x_title="duration", y_title="clips", y_lim=[0, None],
                               sort=duration_bin_names(), title="clip durations", height=320, scale=3,
                               elem_id="em-data-durations")
    unreadable = gr.Dataframe(label="unreadable files (kept out of training) and why", interactive=False,
                              max_height=260, wrap=True, elem_id="em-data-unreadable")

    hygiene_panel.build(wb)
    duplicates_panel.build(wb)

    gr.Markdown("### Relabel rules")
    gr.Markdown("What each tag pressed in Review does to a clip. Select a rule to edit it, or type a new tag to add "
                "one. A change applies to tags recorded from then on: decisions already in the log keep the label "
                "and exclusion they set (tag a clip again to apply the new rule to it).")
    rules = gr.Dataframe(rules_frame(wb), label="the session's rules (select one to edit it)", interactive=False,
                         wrap=True, column_widths=["7%", "15%", "8%", "17%", "11%", "42%"], elem_id="em-rules-table")
    with gr.Row(equal_height=True):
        rule_tag = gr.Textbox(label="tag", scale=2, elem_id="em-rule-tag")
        rule_action = gr.Dropdown(list(RULE_ACTIONS), value="relabel", label="action", scale=1, elem_id="em-rule-action")
        rule_target = gr.Dropdown(wb.labels(), value=None, allow_custom_value=True, scale=2, elem_id="em-rule-target",
                                  label="target label (relabel only; or type a new class)")
        rule_hotkey = gr.Textbox(label="hotkey in Review (one digit)", scale=1, elem_id="em-rule-hotkey")
        rule_keep = gr.Checkbox(label="the clip stays quarantined", scale=1, elem_id="em-rule-keep")
    with gr.Row(equal_height=True):
        rule_description = gr.Textbox(label="description", scale=5, elem_id="em-rule-description")
        rule_save = gr.Button("Save rule", variant="primary", scale=1, elem_id="em-rule-save")
    rule_message = gr.HTML(elem_id="em-rule-message")

    augment_preview.build(wb)

    gr.Markdown("### Export the corrected manifest")
    with gr.Row():
        export_format = gr.Radio(list(FORMATS), value="csv", label="format", scale=1)
        export_button = gr.Button("Export manifest", scale=1, elem_id="em-data-export")
        export_file = gr.File(label="download", interactive=False, visible=False, scale=2, elem_id="em-data-export-file")
    export_message = gr.HTML(elem_id="em-data-export-message")
    return Layout(source=source, dataset_layout=dataset_layout, class_map=class_map, name=name, group_pattern=group_pattern,
                  root=root, keep_unmapped=keep_unmapped, seed=seed, import_button=import_button,
                  import_summary=import_summary, totals=totals, refresh=refresh, per_class=per_class,
                  class_plot=class_plot, durations=durations, unreadable=unreadable, rules=rules, rule_tag=rule_tag,
                  rule_action=rule_action, rule_target=rule_target, rule_hotkey=rule_hotkey, rule_keep=rule_keep,
                  rule_description=rule_description, rule_save=rule_save, rule_message=rule_message,
                  export_format=export_format, export_button=export_button, export_file=export_file,
                  export_message=export_message)


def wire(wb: Workbench, ui: Layout, *, blocks: gr.Blocks | None, downloads: Path) -> None:
    """Events to handlers: each handler refuses by raising, and `safe` turns that into one toast
    that leaves every panel as it was. `blocks` serves the audio of datasets imported while it runs."""
    stats = safe(lambda: show_stats(wb))

    @safe
    def on_import(src, lay, cmap, keep, dataset_name, pattern, manifest_root, split_seed,
                  progress=gr.Progress(track_tqdm=True)):
        progress(0, desc="discovering files")
        return run_import(wb, blocks, src, lay, cmap, keep, dataset_name, pattern, manifest_root, split_seed)

    ui.import_button.click(on_import, [ui.source, ui.dataset_layout, ui.class_map, ui.keep_unmapped, ui.name,
                                       ui.group_pattern, ui.root, ui.seed], [ui.import_summary, *ui.stats_outputs])
    ui.refresh.click(stats, None, ui.stats_outputs)
    tab = gr.context.get_render_context()
    if isinstance(tab, gr.Tab):  # opening the tab shows what other tabs changed
        tab.select(stats, None, ui.stats_outputs)
        tab.select(safe(lambda: rules_frame(wb)), None, ui.rules)

    @safe
    def on_rule(rows, event: gr.SelectData):
        return pick_rule(wb, rows, event.index[0])

    ui.rules.select(on_rule, ui.rules, ui.rule_form)
    ui.rule_action.change(safe(target_for_action), ui.rule_action, ui.rule_target)
    ui.rule_save.click(safe(lambda *form: save_rule(wb, *form)), ui.rule_form, [ui.rule_message, ui.rules])
    ui.export_button.click(safe(lambda fmt: run_export(wb, downloads, fmt)), ui.export_format,
                           [ui.export_file, ui.export_message])


# --- handlers: plain values in, the outputs' new values out; a refusal raises ValueError -------
def show_stats(wb: Workbench) -> list[Any]:
    """Layout.stats_outputs: the totals line, clips per class and split (a table and its long form
    for the chart), the duration histogram without empty bins beyond the data, the unreadable files."""
    stats = session_stats(wb.store)
    table = stats.per_class_split.reset_index().rename(columns={"label": "class"})
    long = (stats.per_class_split.drop(columns="total", errors="ignore").reset_index()
            .melt(id_vars="label", var_name="split", value_name="clips").rename(columns={"label": "class"}))
    hist = pd.DataFrame({"duration": stats.duration_histogram.index.astype(str),
                         "clips": stats.duration_histogram.to_numpy().astype(int)})
    filled = hist.index[hist.clips > 0]
    hist = hist.loc[filled.min():filled.max()] if len(filled) else hist
    text = (f"**{stats.clips}** clips in {len(stats.datasets)} datasets ({', '.join(stats.datasets) or 'none'}): "
            f"{stats.usable} usable, **{len(stats.unreadable)} unreadable** · {stats.decisions} decisions: "
            f"{stats.relabelled} relabelled, {stats.excluded} excluded, {stats.quarantined} quarantined")
    return [text, table, long, hist, stats.unreadable]


def run_import(wb: Workbench, blocks: gr.Blocks | None, src: str | None, lay: str, cmap: str | None, keep: bool,
               dataset_name: str | None, pattern: str | None, manifest_root: str | None,
               split_seed: float | None) -> list[Any]:
    """Import a dataset from a path on the server (progress through the importer's tqdm bars):
    the import summary, then show_stats. Its root joins the paths `blocks` serves."""
    if not src or not src.strip():
        raise ValueError("Type the path of a dataset folder or manifest on this server first.")
    mapping = None
    if cmap and cmap != NO_CLASS_MAP:
        mapping = ClassMap.load(cmap.strip(), unmapped="keep" if keep else None)
    summary = import_dataset(wb.store, src.strip(), layout=lay, name=(dataset_name or "").strip() or None,
                             class_map=mapping, root=(manifest_root or "").strip() or None,
                             group_pattern=(pattern or "").strip() or None, seed=int(split_seed or 0), progress=True)
    dataset_root = str(wb.store.dataset_roots()[summary.dataset_id])
    if blocks is not None and dataset_root not in blocks.allowed_paths:
        blocks.allowed_paths.append(dataset_root)
    lines = "\n".join(summary.lines())
    return [f'<pre class="em-import-summary">{html.escape(lines)}</pre>', *show_stats(wb)]


def rules_frame(wb: Workbench) -> pd.DataFrame:
    """The session's relabel rules as the table shows them (RULE_COLUMNS), by hotkey."""
    return pd.DataFrame([[r.hotkey or "", r.tag, r.action, r.target_label or "", "yes" if r.keep_quarantined else "no",
                          r.description] for r in wb.store.rules()], columns=RULE_COLUMNS)


def pick_rule(wb: Workbench, rows: pd.DataFrame, row: int) -> list[Any]:
    """Layout.rule_form filled with the rule on row `row` of the table, as the store holds it."""
    tag = rows.iloc[row]["tag"]
    rule = next((r for r in wb.store.rules() if r.tag == tag), None)
    if rule is None:
        raise ValueError(f"Rule {tag!r} is no longer in the session (open the tab again to see its rules).")
    return [rule.tag, rule.action, rule.target_label, rule.hotkey or "", rule.keep_quarantined, rule.description]


def target_for_action(action: str) -> gr.Dropdown:
    """Only a relabel rule has a target label: the field is emptied and locked for the others."""
    return gr.Dropdown(interactive=True) if action == "relabel" else gr.Dropdown(value=None, interactive=False)


def save_rule(wb: Workbench, tag: str | None, action: str | None, target: str | None, hotkey: str | None,
              keep: bool, description: str | None) -> list[Any]:
    """Add the rule, or replace the rule with its tag, checked as a rules file is (Rule.check, and
    no hotkey held by two rules); a bad rule raises ValueError naming the field and writes nothing.
    Returns the confirmation and the rules table."""
    rule = Rule(tag=(tag or "").strip(), action=action, target_label=(target or "").strip() or None,
                keep_quarantined=bool(keep), description=(description or "").strip(), hotkey=(hotkey or "").strip() or None)
    existed = any(r.tag == rule.tag for r in wb.store.rules())
    wb.store.set_rule(rule)
    log = wb.store.decisions()
    earlier = int(((log.action == "tag") & (log.tag == rule.tag)).sum())
    text = (f"rule {rule.describe()} {'changed' if existed else 'added'}: it applies to tags recorded from now on"
            + (f"; the {earlier} earlier decisions with this tag keep what they set" if earlier else ""))
    return [f'<span class="em-message-ok">{html.escape(text)}</span>', rules_frame(wb)]


def run_export(wb: Workbench, downloads: Path, fmt: str) -> list[Any]:
    """Export the corrected manifest and offer a copy from `downloads` (a folder Gradio serves)."""
    summary = export_manifest(wb.store, default_export_path(wb.store, format=fmt), format=fmt)
    offered = downloads / summary.path.name
    shutil.copyfile(summary.path, offered)
    text = "<br>".join(html.escape(line) for line in summary.lines())
    return [gr.File(value=str(offered), visible=True), f'<span class="em-message-ok">{text}</span>']
