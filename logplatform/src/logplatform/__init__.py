"""logplatform: the log-ingestion service bluegreen deploys (ingest, validate, enrich, durable sink)."""

from ._version import __version__

__all__ = ["__version__"]
