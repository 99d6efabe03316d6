"""Data: what is in the session and how it gets in and out.

Import a dataset from a path on the server (layouts and class maps as `earmark import`, with a
progress bar fed by the importer's own tqdm bars); the session's statistics (clips per class and
split, the duration histogram) and its unreadable files with their reasons; a before/after
preview of augmentations on one clip; and the corrected manifest (current labels, exclusions,
decision provenance) exported as CSV or Parquet and offered as a download.
"""
from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from pipelines.export import FORMATS, default_export_path, export_manifest
from pipelines.importing import LAYOUTS, ClassMap, import_dataset
from pipelines.stats import duration_bin_names, session_stats
from workbench import augment_preview
from workbench.context import Workbench, safe

CLASS_MAPS_DIR = Path(__file__).resolve().parent.parent / "data" / "class_maps"
NO_CLASS_MAP = "(none: keep the dataset's classes)"


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    blocks = gr.context.Context.root_block  # to serve audio of datasets imported while it runs
    downloads = Path(tempfile.mkdtemp(prefix="earmark-exports-"))  # Gradio serves files from the temp dir

    gr.Markdown("### Import a dataset")
    with gr.Row(equal_height=True):
        source = gr.Textbox(label="dataset folder or manifest (a path on the server)", scale=4, elem_id="em-data-source",
                            placeholder="/data/ESC-50-master  or  /data/mine/manifest.csv")
        layout = gr.Dropdown(list(LAYOUTS), value="auto", label="layout", scale=1)
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
        per_class = gr.Dataframe(label="usable clips per class and split (current labels)", interactive=False,
                                 elem_id="em-data-per-class")
        class_plot = gr.BarPlot(x="class", y="clips", color="split", x_title="class", y_title="clips", y_lim=[0, None],
                                title="clips per class and split", x_label_angle=-30, height=320)
        durations = gr.BarPlot(x="duration", y="clips", x_title="duration", y_title="clips", y_lim=[0, None],
                               sort=duration_bin_names(), title="clip durations", height=320, elem_id="em-data-durations")
    unreadable = gr.Dataframe(label="unreadable files (kept out of training) and why", interactive=False,
                              max_height=260, wrap=True, elem_id="em-data-unreadable")

    augment_preview.build(wb)

    gr.Markdown("### Export the corrected manifest")
    with gr.Row():
        export_format = gr.Radio(list(FORMATS), value="csv", label="format", scale=1)
        export_button = gr.Button("Export manifest", scale=1, elem_id="em-data-export")
        export_file = gr.File(label="download", interactive=False, visible=False, scale=2, elem_id="em-data-export-file")
    export_message = gr.HTML(elem_id="em-data-export-message")

    stats_outputs = [totals, per_class, class_plot, durations, unreadable]

    @safe
    def show_stats():
        stats = session_stats(wb.store)
        table = stats.per_class_split.reset_index().rename(columns={"label": "class"})
        long = (stats.per_class_split.drop(columns="total", errors="ignore").reset_index()
                .melt(id_vars="label", var_name="split", value_name="clips").rename(columns={"label": "class"}))
        hist = pd.DataFrame({"duration": stats.duration_histogram.index.astype(str),
                             "clips": stats.duration_histogram.to_numpy().astype(int)})
        filled = hist.index[hist.clips > 0]
        hist = hist.loc[filled.min():filled.max()] if len(filled) else hist  # no empty bins beyond the data
        text = (f"**{stats.clips}** clips in {len(stats.datasets)} datasets ({', '.join(stats.datasets) or 'none'}): "
                f"{stats.usable} usable, **{len(stats.unreadable)} unreadable** · {stats.decisions} decisions: "
                f"{stats.relabelled} relabelled, {stats.excluded} excluded, {stats.quarantined} quarantined")
        return [text, table, long, hist, stats.unreadable]

    @safe
    def run_import(src, lay, cmap, keep, dataset_name, pattern, manifest_root, split_seed,
                   progress=gr.Progress(track_tqdm=True)):
        if not src or not src.strip():
            raise ValueError("Type the path of a dataset folder or manifest on this server first.")
        mapping = None
        if cmap and cmap != NO_CLASS_MAP:
            mapping = ClassMap.load(cmap.strip(), unmapped="keep" if keep else None)
        progress(0, desc="discovering files")
        summary = import_dataset(wb.store, src.strip(), layout=lay, name=(dataset_name or "").strip() or None,
                                 class_map=mapping, root=(manifest_root or "").strip() or None,
                                 group_pattern=(pattern or "").strip() or None, seed=int(split_seed or 0), progress=True)
        dataset_root = str(wb.store.dataset_roots()[summary.dataset_id])
        if blocks is not None and dataset_root not in blocks.allowed_paths:
            blocks.allowed_paths.append(dataset_root)
        lines = "\n".join(summary.lines())
        return [f'<pre class="em-import-summary">{html.escape(lines)}</pre>', *show_stats()]

    import_button.click(run_import, [source, layout, class_map, keep_unmapped, name, group_pattern, root, seed],
                        [import_summary, *stats_outputs])
    refresh.click(show_stats, None, stats_outputs)
    tab = gr.context.get_render_context()
    if isinstance(tab, gr.Tab):  # opening the tab shows what other tabs changed
        tab.select(show_stats, None, stats_outputs)

    @safe
    def run_export(fmt):
        summary = export_manifest(wb.store, default_export_path(wb.store, format=fmt), format=fmt)
        offered = downloads / summary.path.name
        shutil.copyfile(summary.path, offered)
        text = "<br>".join(html.escape(line) for line in summary.lines())
        return [gr.File(value=str(offered), visible=True), f'<span class="em-message-ok">{text}</span>']

    export_button.click(run_export, [export_format], [export_file, export_message])
