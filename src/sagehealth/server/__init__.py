"""The network doors' web side: the FastAPI REST app (``sagehealth serve``) and the bearer-token
gate it shares with MCP over HTTP."""
