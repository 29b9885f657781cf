"""The tool registry: every door (Python, MCP, REST) lists and calls tools through it.

A :class:`Tool` is a typed function ``fn(eco, args) -> result`` with pydantic models for its
arguments and result; its docstring is its description. :meth:`Registry.call` validates the
arguments (unknown tools and malformed arguments are refused with a clear message and audited),
then runs the function, which checks access and audits through the library API.

>>> from sagehealth.agents import REGISTRY                       # doctest: +SKIP
>>> REGISTRY.call(eco, "search_evidence", {"query": "pleural effusion", "k": 3})  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from sagehealth.agents import report_tools as r
from sagehealth.agents import tools as t
from sagehealth.agents.answer import Answer
from sagehealth.errors import ToolArgumentError, UnknownTool

if TYPE_CHECKING:
    from sagehealth.ecosystem import Ecosystem


@dataclass(frozen=True)
class Tool:
    """One tool: name, function, argument and result models, description, and whether it writes."""

    name: str
    fn: Callable[[Any, Any], BaseModel]
    args: type[BaseModel]
    result: type[BaseModel]
    writes: bool = False

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or self.name)

    def input_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.result.model_json_schema()


def _argument_problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class Registry:
    """Tools by name."""

    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {tool.name: tool for tool in tools}

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(f"no tool named {name!r}; tools: {', '.join(self._tools)}") from None

    def validate(self, name: str, arguments: Mapping[str, Any] | BaseModel | None) -> BaseModel:
        """The parsed arguments of a call to ``name``; ToolArgumentError says which field is wrong."""
        tool = self.get(name)
        if isinstance(arguments, tool.args):
            return arguments
        if isinstance(arguments, BaseModel):
            arguments = arguments.model_dump()
        if arguments is not None and not isinstance(arguments, Mapping):
            raise ToolArgumentError(f"{name}: arguments must be an object (got {type(arguments).__name__})")
        try:
            return tool.args.model_validate(dict(arguments or {}))
        except ValidationError as exc:
            raise ToolArgumentError(f"{name}: {_argument_problems(exc)}") from None

    def call(self, eco: Ecosystem, name: str, arguments: Mapping[str, Any] | BaseModel | None = None) -> BaseModel:
        """Run tool ``name`` as ``eco``'s principal. Refusals before the tool runs (unknown tool,
        malformed arguments) are audited; the tool itself checks access and audits the rest."""
        try:
            tool = self.get(name)
            args = self.validate(name, arguments)
        except (UnknownTool, ToolArgumentError) as exc:
            eco.reject_call(f"tool {name}"[:200], str(exc))
            raise
        return tool.fn(eco, args)

    def call_json(self, eco: Ecosystem, name: str, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """:meth:`call`, with the result as JSON-ready data."""
        return self.call(eco, name, arguments).model_dump(mode="json")


REGISTRY = Registry([
    Tool("search_evidence", t.search_evidence, t.SearchArgs, t.SearchResult),
    Tool("patient_context", t.patient_context, t.ContextArgs, t.ContextResult),
    Tool("lab_results", t.lab_results, t.LabArgs, t.LabResults),
    Tool("current_medications", t.current_medications, t.MedicationsArgs, t.MedicationsResult),
    Tool("get_document", t.get_document, t.DocumentArgs, t.DocumentResult),
    Tool("lookup_concept", t.lookup_concept, t.ConceptArgs, t.ConceptResult),
    Tool("find_patients", t.find_patients, t.PatientsArgs, t.PatientsResult),
    Tool("query_sql", t.query_sql, t.SqlArgs, t.SqlResult),
    Tool("similar_cases", t.similar_cases, t.SimilarArgs, t.SearchResult),
    Tool("record_feedback", t.record_feedback, t.FeedbackArgs, t.FeedbackResult, writes=True),
    Tool("answer_question", t.answer_question, t.AskArgs, Answer, writes=True),
    Tool("worklist", r.worklist, r.WorklistArgs, r.WorklistResult),
    Tool("draft_report", r.draft_report, r.DraftArgs, r.DraftResult, writes=True),
    Tool("sign_report", r.sign_report, r.SignArgs, r.SignResult, writes=True),
    Tool("report_feedback", r.report_feedback, r.ReportFeedbackArgs, r.ReportFeedbackResult),
])
