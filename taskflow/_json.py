"""JSON encoding of job data, results and options (orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from taskflow.errors import EncodeError


def dumps(value: Any, what: str = "value") -> str:
    """Encode ``value`` as JSON text; raise EncodeError naming ``what`` when it can't be."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise EncodeError(f"{what} cannot be encoded as JSON: {exc}") from exc


def loads(text: str | bytes | None) -> Any:
    """Decode JSON text; None and empty text decode to None."""
    if not text:
        return None
    return orjson.loads(text)
