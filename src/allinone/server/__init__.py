"""The HTTP service: `create_app(settings)` builds the FastAPI app (nothing happens at import time)."""

from .app import create_app

__all__ = ["create_app"]
