"""The registry of computation paths and the choice among them."""

from __future__ import annotations

from ._direct import conv_direct

METHODS = {"direct": conv_direct}


def resolve_method(method) -> str:
    """The path name for ``method``; "auto" picks one. Unknown names list the valid ones."""
    if method == "auto":
        return "direct"  # the only path so far
    if not isinstance(method, str) or method not in METHODS:
        valid = ", ".join(repr(m) for m in ("auto", *METHODS))
        raise ValueError(f"method={method!r} is not one of {valid}")
    return method
