"""The network doors' web side: the FastAPI REST app (``sagehealth serve``)."""
