"""CLI commands for training data (registered on the main app in ``cli.py``):
``sagehealth export dataset KIND``, ``sagehealth adapt embedder|generator|models``. Thin: they call the library."""

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


adapt_app = typer.Typer(help="Adapt models to the store's data (researchers, data stewards).", no_args_is_help=True)
app.add_typer(adapt_app, name="adapt")


@adapt_app.command("embedder")
def adapt_embedder(
    pairs: Annotated[str, typer.Option(help="A retrieval export (sagehealth export dataset retrieval --out DIR).")],
    out_dir: Annotated[str, typer.Option("--out", help="A new folder for the adapted model.")],
    base: Annotated[str, typer.Option(help="Base model: minilm (bundled all-MiniLM-L6-v2) or st:NAME_OR_PATH.")] = "minilm",
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step (in-batch negatives).")] = 32,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Fine-tune the retrieval embedder on exported pairs and register it; search with it via
    sagehealth index --embedder st:DIR (needs the embed-torch extra, accelerate and datasets)."""
    info = _open(home).adapt_embedder(pairs, out_dir, base=base, epochs=epochs, batch_size=batch_size)
    if json:
        print_json(info)
        return
    out.print(f"[green]adapted[/green] {info['base']} on {info['pairs']} pairs -> {info['path']} "
              f"(train loss {info['train_loss']}); use it as --embedder st:{info['path']}")


@adapt_app.command("generator")
def adapt_generator(
    pairs: Annotated[str, typer.Option(help="An instruct export (sagehealth export dataset instruct --validation 0.1 --out DIR).")],
    out_dir: Annotated[str, typer.Option("--out", help="A new folder for the adapter.")],
    base: Annotated[str, typer.Option(help="Base model: smollm2 (bundled SmolLM2-135M-Instruct), a .gguf file or a transformers model folder.")] = "smollm2",
    task: Annotated[str, typer.Option(help="The instruct task to learn.")] = "findings_to_impression",
    epochs: Annotated[int, typer.Option(help="Passes over the examples.")] = 1,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    max_examples: Annotated[int | None, typer.Option(help="Train on the first N examples only.")] = None,
    evaluate: Annotated[int, typer.Option(help="Validation examples to score before and after (0: none).")] = 50,
    balance: Annotated[bool, typer.Option(help="Repeat the rarer of normal / abnormal impressions until both weigh the same.")] = False,
    home: HomeOpt = None,
    json: JsonOpt = False,
) -> None:
    """Train a LoRA adapter (PEFT) for a small language model on exported instruction pairs,
    score it against its base on the export's validation split, and register it; draft with it
    via --llm hf:DIR (needs the adapt extra: torch, transformers, peft, gguf)."""
    say = None if json else (lambda m: typer.echo(m, err=True))
    info = _open(home).adapt_generator(pairs, out_dir, base=base, task=task, epochs=epochs, rank=rank,
                                       learning_rate=learning_rate, batch_size=batch_size,
                                       max_examples=max_examples, evaluate=evaluate, balance=balance,
                                       progress=say)
    if json:
        print_json(info)
        return
    out.print(f"[green]adapted[/green] {info['base']} on {info['examples']} {info['task']} examples -> {info['path']} "
              f"(train loss {info['train_loss']}, {info['train_seconds']} s); draft with --llm hf:{info['path']}")
    v = info.get("validation") or {}
    if v.get("after"):
        print_rows([{"model": name, **{k: v[name][k] for k in ("rouge_l", "normal_abnormal_agreement",
                                                                  "abnormal_recall", "examples")}}
                    for name in ("before", "after")], title="validation split (by patient)")


@adapt_app.command("models")
def models(home: HomeOpt = None, json: JsonOpt = False) -> None:
    """The model registry: adapted models, their base, dataset and store version."""
    rows = _open(home).models()
    if json:
        print_json(rows)
        return
    print_rows([{k: r[k] for k in ("model_id", "kind", "base", "path", "store_version", "examples", "created_by",
                                   "created_at")} for r in rows], title="models")
