from mmindex.cli import app

app()
