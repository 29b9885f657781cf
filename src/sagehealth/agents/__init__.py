"""Layer 3, the agent layer: one governed tool registry (served over MCP, REST and Python), the
evidence-grounded agent with its checks, and agent traces and feedback kept as data."""

from sagehealth.agents.answer import Answer
from sagehealth.agents.registry import REGISTRY, Registry, Tool

__all__ = ["REGISTRY", "Answer", "Registry", "Tool"]
