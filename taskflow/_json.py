"""JSON encoding of job data, results and options (orjson).

Strict on purpose: a value should come back as it went in, so what JSON would change
on the way (NaN and infinities become null; datetimes, dataclasses and subclasses of
str/int/dict/list lose their type) is refused with EncodeError. Two kinds of values
orjson writes on its own terms travel as JSON can carry them: an enum member as its
value, a UUID as its text.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from taskflow.errors import EncodeError

_STRICT = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
           | orjson.OPT_PASSTHROUGH_SUBCLASS)


def dumps(value: Any, what: str = "value") -> str:
    """Encode ``value`` as JSON text; raise EncodeError naming ``what`` when it can't be
    encoded faithfully."""
    try:
        text = orjson.dumps(value, option=_STRICT)
    except TypeError as exc:
        raise EncodeError(f"{what} cannot be encoded as JSON: {exc}") from exc
    if b"null" in text and _has_non_finite(value):
        raise EncodeError(f"{what} cannot be encoded as JSON: NaN and infinities have no "
                          "JSON form")
    return text.decode()


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def loads(text: str | bytes | None) -> Any:
    """Decode JSON text; None and empty text decode to None."""
    if not text:
        return None
    return orjson.loads(text)
