"""`python -m initlab` runs the command line."""

from initlab.cli import app

app(prog_name="initlab")
