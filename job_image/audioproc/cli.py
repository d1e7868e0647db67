"""The ``audioproc`` command line.

    audioproc process INPUT... [--video-id ID] [--extractors a,b] [--device auto|cpu|cuda]
                               [--out DIR|s3://bucket/prefix] [--jobs N]
    audioproc extractors
    audioproc show MANIFEST [--plot out.png]
    audioproc run-index --items-file F --output URI [--device cpu|cuda] [--max-duration-s N] [--index I]

Exit codes of ``process``: 0 every item ok with every extractor ok; 1 some items failed
(no manifest); 4 every item has a manifest but some extractor recorded ``status: error``
in it (e.g. audio too short for it); 2 usage or configuration error, found before any work
(unknown or empty extractor name, bad option or video id, malformed input URI, invalid
setting, an output that cannot be written). ``run-index`` follows the pod contract
(docs/architecture.md): 0 ok, 3 input error (not worth retrying), 1 anything else.

Heavy modules (torch, PyAV) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audioproc.errors import ConfigError
from audioproc.extractors.catalog import CATALOG
from audioproc.settings import PipelineSettings, load_settings

if TYPE_CHECKING:
    from audioproc.models.manifest import ExtractorRecord, Manifest
    from audioproc.models.pod_contract import TerminationMessage, WorkItem
    from audioproc.runner import ItemResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 4

app = typer.Typer(
    name="audioproc",
    add_completion=False,
    no_args_is_help=True,
    help="Video and audio files in, audio feature manifests (audio_manifest_v1) out.",
)
console = Console(stderr=True)
out = Console()


def main() -> None:
    app()


def _usage_error(message: str) -> typer.Exit:
    # escape: the message quotes user input ("[bold]" in a video id must print as typed)
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(EXIT_USAGE)


# --------------------------------------------------------------------------- process


def default_video_id(input_uri: str) -> str:
    """A video id from an input's file name: ``/x/My Clip.mp4`` -> ``My-Clip``."""
    stem = Path(input_uri.rstrip("/").rsplit("/", 1)[-1]).stem or "input"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "input"
    return cleaned[:128]


def _cli_settings() -> PipelineSettings:
    """Settings from the environment; without ALLOWED_ROOTS, the CLI reads any local file.

    The allowed-roots restriction protects services (facade, pods) from requests naming
    arbitrary files; a person at the command line names their own files. An invalid
    setting is a usage error (exit 2) with one line naming the variable.
    """
    try:
        settings = load_settings(PipelineSettings)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from exc
    if "ALLOWED_ROOTS" not in {k.upper() for k in os.environ}:
        settings = settings.model_copy(update={"allowed_roots": [Path("/")]})
    return settings


def _start_metrics(settings: PipelineSettings) -> None:
    """With ENABLE_METRICS, serve /metrics on PROMETHEUS_PORT for as long as this command runs."""
    if not settings.enable_metrics:
        return
    from audioproc.metrics import start_exporter

    if start_exporter(settings.prometheus_port) is None:
        console.print(
            f"[yellow]metrics disabled:[/yellow] cannot listen on port {settings.prometheus_port}",
            soft_wrap=True,
            highlight=False,
        )


def _parse_extractors(requested: str | None) -> tuple[list[str], bool]:
    """(names to run, whether the user named them); raises typer.Exit(2) for unknown or empty names.

    ``--extractors ,`` (or ``""``, ``a,,b``) is refused: running the standard set instead of
    what was asked for would hide the typo.
    """
    from audioproc.errors import UnknownExtractorError
    from audioproc.extractors.registry import resolve_names

    names = [n.strip() for n in requested.split(",")] if requested is not None else []
    if not all(names):
        raise _usage_error(
            f"--extractors {requested!r} has an empty name; give comma-separated names, "
            "e.g. --extractors loudness,pitch (see `audioproc extractors`)"
        )
    try:
        return resolve_names(names), bool(names)
    except UnknownExtractorError as exc:
        raise _usage_error(str(exc)) from exc


def _usable_extractors(names: list[str], explicit: bool, settings: PipelineSettings) -> list[str]:
    """Those of ``names`` that can run here; an unavailable one the user named is a usage error."""
    from audioproc.extractors.registry import usable_extractors

    usable, unusable = usable_extractors(names, settings)
    if explicit and unusable:
        reasons = "; ".join(f"{n}: {why}" for n, why in unusable.items())
        raise _usage_error(f"extractor(s) not available here: {reasons}")
    for name, why in unusable.items():
        console.print(f"[yellow]skipping {name}[/yellow] (standard set): {why}", soft_wrap=True)
    if not usable:
        raise _usage_error("no extractor is available here (see `audioproc extractors`)")
    return usable


@app.command()
def process(
    inputs: Annotated[
        list[str], typer.Argument(help="Local paths, file://, http(s):// or s3:// URIs.")
    ],
    video_id: Annotated[
        str | None, typer.Option(help="Video id (one input only); default: the file name.")
    ] = None,
    extractors: Annotated[
        str | None, typer.Option(help="Comma-separated names; default: the standard set.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out_dir: Annotated[
        str, typer.Option("--out", help="Output directory or s3://bucket/prefix.")
    ] = "out",
    jobs: Annotated[int, typer.Option(min=1, help="Inputs fetched and decoded in parallel.")] = 1,
) -> None:
    """Extract features from each input; write <out>/<video-id>/manifest.json."""
    from audioproc.devices import device_kind
    from audioproc.errors import InputError, OutputError
    from audioproc.sources import validate_uri
    from audioproc.storage import check_video_id, probe_output

    settings = _cli_settings()
    names, explicit = _parse_extractors(
        extractors
    )  # before importing torch: usage errors stay fast
    if video_id is not None and len(inputs) > 1:
        raise _usage_error(
            "--video-id names one input; give one input or leave the ids to the file names"
        )
    ids = [video_id] if video_id is not None else [default_video_id(i) for i in inputs]
    if len(set(ids)) != len(ids):
        raise _usage_error(
            "two inputs would get the same video id (same file name); process them separately"
        )
    try:
        for vid, uri in zip(ids, inputs, strict=True):
            check_video_id(vid)
            validate_uri(uri, settings)
        device_kind(device)
        probe_output(
            out_dir, settings
        )  # before the extractors: an unwritable output fails now, not at the end
    except (InputError, OutputError, ValueError) as exc:
        raise _usage_error(str(exc)) from exc
    names = _usable_extractors(names, explicit, settings)
    # Every usage error so far is found without torch; the pipeline imports it here, once.
    from audioproc.runner import ItemRequest, process_items, resolve_device

    try:
        resolve_device(device, settings)  # "cuda" where there is none
    except ValueError as exc:
        raise _usage_error(str(exc)) from exc
    items = [
        ItemRequest(input_uri=uri, video_id=vid, extractors=names)
        for vid, uri in zip(ids, inputs, strict=True)
    ]
    _start_metrics(settings)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("processing", total=len(items))

        def on_result(result: ItemResult) -> None:
            progress.advance(task)
            progress.update(task, description=f"processed {result.video_id}")

        results = process_items(
            items, out_dir, device=device, settings=settings, jobs=jobs, on_result=on_result
        )
    out.print(_summary_table(results))
    for result in results:  # in full, unwrapped: the table cell may be cut
        if result.status != "ok":
            out.print(
                f"[red]failed[/red] {result.video_id}: {escape(result.error or '')}",
                soft_wrap=True,
                markup=True,
                highlight=False,
            )
        for record in _failed_extractors(result):
            out.print(
                f"[yellow]incomplete[/yellow] {result.video_id}: {record.name}: {escape(record.error or '')}",
                soft_wrap=True,
                markup=True,
                highlight=False,
            )
    raise typer.Exit(process_exit_code(results))


def _failed_extractors(result: ItemResult) -> list[ExtractorRecord]:
    return (
        [r for r in result.manifest.extractors if r.status != "ok"]
        if result.manifest is not None
        else []
    )


def process_exit_code(results: list[ItemResult]) -> int:
    """1 if an item failed, else 4 if an item's manifest records a failed extractor, else 0."""
    if any(r.status != "ok" for r in results):
        return EXIT_FAILED
    return EXIT_INCOMPLETE if any(_failed_extractors(r) for r in results) else EXIT_OK


def _summary_table(results: list[ItemResult]) -> Table:
    table = Table(title="audioproc results")
    for column in (
        "video id",
        "status",
        "device",
        "audio (s)",
        "extractors ok",
        "manifest / error",
    ):
        table.add_column(column, overflow="fold")
    for r in results:
        if r.manifest is not None:
            ok = sum(e.status == "ok" for e in r.manifest.extractors)
            failed = [e.name for e in r.manifest.extractors if e.status != "ok"]
            table.add_row(
                r.video_id,
                "[green]ok[/green]",
                r.device or "-",
                f"{r.manifest.audio.duration_s:.1f}",
                f"{ok}/{len(r.manifest.extractors)}"
                + (f" (failed: {', '.join(failed)})" if failed else ""),
                r.manifest_uri or "-",
            )
        else:
            error = r.error or "-"
            table.add_row(
                r.video_id,
                "[red]error[/red]",
                r.device or "-",
                "-",
                "-",
                error if len(error) <= 80 else error[:77] + "...",
            )
    return table


# --------------------------------------------------------------------------- extractors


@app.command("extractors")
def list_extractors() -> None:
    """List the extractors: name, version, devices, and whether they can run here."""
    from audioproc.extractors.registry import usable_extractors

    settings = _cli_settings()
    _, unusable = usable_extractors(list(CATALOG), settings)
    table = Table(title="extractors")
    for column in ("name", "version", "devices", "standard set", "available", "description"):
        table.add_column(column, overflow="fold")
    for name, info in CATALOG.items():
        available = (
            "[green]yes[/green]" if name not in unusable else f"[red]no[/red]: {unusable[name]}"
        )
        table.add_row(
            name,
            info.version,
            ",".join(info.devices),
            "yes" if info.default else "no",
            available,
            info.description,
        )
    out.print(table)


# --------------------------------------------------------------------------- show


@app.command()
def show(
    manifest: Annotated[str, typer.Argument(help="manifest.json: a path, file:// or s3:// URI.")],
    plot: Annotated[
        Path | None, typer.Option(help="Draw waveform, loudness, pitch and beats to this PNG.")
    ] = None,
) -> None:
    """Print a manifest's summary; optionally plot it with its artifacts."""
    from pydantic import ValidationError

    from audioproc.storage import read_manifest

    uri = manifest if "://" in manifest else Path(manifest).absolute().as_uri()
    settings = _cli_settings()
    try:
        document = read_manifest(uri, settings)
    except FileNotFoundError as exc:
        raise _usage_error(f"no manifest at {manifest!r}") from exc
    except ValidationError as exc:
        raise _usage_error(f"{manifest!r} is not an audio_manifest_v1 document: {exc}") from exc
    _print_manifest(document)
    if plot is not None:
        from audioproc.plot import plot_manifest

        panels = plot_manifest(document, uri, plot, settings)
        out.print(f"plot: {plot} ({', '.join(panels)})")


def _print_manifest(manifest: Manifest) -> None:
    audio = manifest.audio
    out.print(f"[bold]{manifest.video_id}[/bold]  {manifest.input_uri}")
    out.print(
        f"audio: {audio.duration_s:.2f} s, source {audio.source.codec} {audio.source.sample_rate} Hz "
        f"{audio.source.channels} ch ({audio.source.container}); device {manifest.device}; "
        f"created {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    table = Table()
    for column in ("extractor", "version", "status", "device", "ms", "artifacts"):
        table.add_column(column, overflow="fold")
    for record in manifest.extractors:
        status = "[green]ok[/green]" if record.status == "ok" else "[red]error[/red]"
        table.add_row(
            record.name,
            record.version,
            status,
            record.device,
            f"{record.duration_ms:.0f}",
            ", ".join(record.artifacts.values()),
        )
    out.print(table)
    for record in manifest.extractors:
        detail = record.error if record.status == "error" else _format_features(record.features)
        out.print(f"[bold]{record.name}[/bold]: {detail}", soft_wrap=True, highlight=False)
        for note in record.notes:
            out.print(f"  note: {note}", soft_wrap=True, highlight=False)
    for error in manifest.errors:
        out.print(f"[red]error:[/red] {error}", soft_wrap=True, highlight=False)


def _format_features(features: dict[str, Any], limit: int = 12) -> str:
    """Scalars as ``name=value``; lists and dicts summarised by their length."""
    parts = []
    for key, value in features.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.4g}")
        elif isinstance(value, (list, dict)):
            parts.append(f"{key}=[{len(value)}]")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts[:limit]) + (", …" if len(parts) > limit else "")


# --------------------------------------------------------------------------- run-index


@app.command("run-index")
def run_index(
    output: Annotated[str, typer.Option(help="<spec.output>/<audiojob-name>.")],
    items_file: Annotated[
        Path | None, typer.Option(help="JSON list of {inputUri, videoId, extractors}.")
    ] = None,
    items_from: Annotated[
        str | None,
        typer.Option(help="Item list (JSON Lines, file:// or s3://) instead of --items-file."),
    ] = None,
    items_offset: Annotated[
        int, typer.Option(min=0, help="Byte offset of this Job's first line in --items-from.")
    ] = 0,
    first_index: Annotated[
        int, typer.Option(min=0, help="Item index of the line at --items-offset.")
    ] = 0,
    extractors: Annotated[
        str | None,
        typer.Option(help="Comma-separated extractors of --items-from items that name none."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (auto also accepted).")] = "auto",
    max_duration_s: Annotated[
        float | None, typer.Option(help="Longest audio accepted (s).")
    ] = None,
    index: Annotated[
        int | None, typer.Option(help="Item index; default $JOB_COMPLETION_INDEX.")
    ] = None,
) -> None:
    """Process one item of an Indexed Job (the pod contract: exit 0 ok, 3 input error, 1 other)."""
    from audioproc.models.pod_contract import (
        TERMINATION_LOG,
        TERMINATION_LOG_ENV,
        ItemListError,
        PodExit,
        TerminationMessage,
    )
    from audioproc.runner import ItemRequest, process_item

    termination_log = os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG)
    video_id: str | None = None
    try:
        if index is None and "JOB_COMPLETION_INDEX" not in os.environ:
            raise ValueError("no item index: pass --index or set JOB_COMPLETION_INDEX")
        position = index if index is not None else int(os.environ["JOB_COMPLETION_INDEX"])
        entry = _work_item(items_file, items_from, items_offset, first_index, extractors, position)
        video_id = entry.video_id
        item = ItemRequest(
            input_uri=entry.input_uri, video_id=entry.video_id, extractors=entry.extractors
        )
        # Validated like the environment (model_copy would not): a bad value is a ConfigError.
        overrides = {"max_duration_s": max_duration_s} if max_duration_s is not None else {}
        settings = load_settings(PipelineSettings, **overrides)
        _start_metrics(settings)
        result = process_item(item, output, device=device, settings=settings)
    except Exception as exc:  # the pod must always leave a message and an exit code
        _write_termination_message(
            termination_log,
            TerminationMessage(
                video_id=video_id,
                status="error",
                manifest_uri=None,
                device=None,
                error=f"{type(exc).__name__}: {exc}",
            ),
        )
        # A bad line of the item list is this item's input error: retrying cannot fix it.
        failed = PodExit.INPUT_ERROR if isinstance(exc, ItemListError) else PodExit.FAILED
        raise typer.Exit(failed) from exc
    _write_termination_message(
        termination_log,
        TerminationMessage(
            video_id=result.video_id,
            status=result.status,
            manifest_uri=result.manifest_uri,
            device=result.device,
            error=result.error,
        ),
    )
    if result.status == "ok":
        raise typer.Exit(PodExit.OK)
    raise typer.Exit(PodExit.INPUT_ERROR if result.error_kind == "input" else PodExit.FAILED)


def _work_item(
    items_file: Path | None,
    items_from: str | None,
    items_offset: int,
    first_index: int,
    extractors: str | None,
    position: int,
) -> WorkItem:
    """Item ``position`` of this Job: from its items file, or the line ``position`` lines after
    ``items_offset`` in the item list (the pod contract)."""
    from audioproc.models.pod_contract import WorkItem, load_items, read_item_at
    from audioproc.storage import open_stream

    if (items_file is None) == (items_from is None):
        raise ValueError("pass exactly one of --items-file and --items-from")
    if items_file is not None:
        return load_items(items_file.read_bytes())[position]
    assert items_from is not None
    with open_stream(items_from, items_offset) as stream:
        item = read_item_at(stream, items_from, first_index, position)
    default = [name for name in (extractors or "").split(",") if name]
    return WorkItem(
        input_uri=item.input_uri,
        video_id=item.video_id,
        extractors=[e.value for e in item.extractors] if item.extractors else default or None,
    )


def _write_termination_message(path: str, message: TerminationMessage) -> None:
    """The result line to the termination log (and stdout), where the operator reads it."""
    line = message.to_line()
    print(line)
    try:
        with open(path, "w") as log_file:
            log_file.write(line + "\n")
    except OSError as exc:
        print(f"cannot write the termination message to {path}: {exc}", file=sys.stderr)


# --------------------------------------------------------------------------- serve

# The REST facade is a package of its own with its own command; this package (the job image,
# and the library the facade builds on) never imports it. `audioproc serve` only points there.
SERVE_MOVED = (
    "the REST API has its own command: run `audioproc-api serve` (same options, see docs/api.md)"
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Moved: the REST API is `audioproc-api serve`.",
)
def serve() -> None:
    raise _usage_error(SERVE_MOVED)


if __name__ == "__main__":
    main()
