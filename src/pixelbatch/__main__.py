from pixelbatch.cli import app

app()
