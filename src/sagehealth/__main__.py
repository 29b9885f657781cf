"""``python -m sagehealth``: the CLI."""

from sagehealth.cli import main

main()
