"""`mmindex serve`: the HTTP API and the web page over one index. Wiring only, no logic.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart)."""

from mmindex.serve.app import create_app

__all__ = ["create_app"]
