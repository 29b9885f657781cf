"""CLI commands for training data (registered on the main app in ``cli.py``):
``sagehealth export dataset KIND``. Thin: it calls the library."""

from __future__ import annotations

from typing import Annotated

import typer

from sagehealth.cli import HomeOpt, JsonOpt, _open, app, out, print_json, print_rows

export_app = typer.Typer(help="Curated training datasets out of the research zone.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("dataset")
def export_dataset(
    kind: Annotated[str, typer.Argument(help="pretrain, instruct, preference or retrieval.")],
    out_dir: Annotated[str, typer.Option("--out", help="A new (or empty) folder to write the dataset to.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Store version to export (latest when left out).")] = None,
    decontaminate: Annotated[list[str] | None, typer.Option(help="Evaluation file (CSV, JSONL or text): drop examples sharing a 13-word n-gram with it (repeat it).")] = None,
    validation: Annotated[float, typer.Option(help="Share of the patients in a validation split.")] = 0.0,
    test: Annotated[float, typer.Option(help="Share of the patients in a test split.")] = 0.0,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Export a curated, de-identified training dataset (Hugging Face layout: Parquet shards, a
    dataset card, provenance) from the research zone (researchers and data stewards)."""
    r = _open(home).export_dataset(kind, out_dir, version=version, decontaminate=decontaminate or (),
                                   validation=validation, test=test)
    if json:
        print_json(r.as_dict())
        return
    out.print(f"[green]{sum(r.splits.values())}[/green] {r.kind} examples of store version {r.store_version} "
              f"written to {r.path}")
    print_rows([{"split": s, "examples": n} for s, n in r.splits.items()], title="splits")
    print_rows([{"step": k, "removed": v} for k, v in sorted(r.counts["removed"].items())]
               or [{"step": "(nothing removed)", "removed": 0}], title=f"curation: {r.counts['seen']} looked at")
