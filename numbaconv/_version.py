"""numbaconv's version (a leaf module, so that the stale-cache guard can read it)."""

__version__ = "0.1.0"
