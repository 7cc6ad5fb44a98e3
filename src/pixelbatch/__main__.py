"""``python -m pixelbatch``: the same command line as the ``pixelbatch`` script."""

from pixelbatch.cli import app

app()
