"""Field validation shared by the codecs: every failure names the field it is about."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class FrameError(ValueError):
    """A frame from the peer is invalid; the message says which field and why."""


def parse_object(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise FrameError("binary frame (expected a JSON text frame)")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise FrameError("not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise FrameError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], *, path: str = "",
          required: bool = True, default: Any = None) -> Any:
    """``obj[name]`` checked against ``kind``; booleans are never accepted as numbers."""
    where = f"{path}.{name}" if path else name
    if name not in obj:
        if required:
            raise FrameError(f"missing field '{where}'")
        return default
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise FrameError(f"field '{where}' must be {_names(kinds)}, got boolean")
    if not isinstance(value, kinds):
        got = "null" if value is None else type(value).__name__
        raise FrameError(f"field '{where}' must be {_names(kinds)}, got {got}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", dict: "an object",
             list: "an array"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def counter(obj: dict[str, Any], name: str, path: str) -> int:
    """A media stream counter (sequence number, chunk, timestamp): a decimal string on the wire;
    non-negative integers are tolerated."""
    where = f"{path}.{name}" if path else name
    value = field(obj, name, (str, int), path=path)
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise FrameError(f"field '{where}' must be a decimal string, got {value!r}")
        return int(value)
    if value < 0:
        raise FrameError(f"field '{where}' must not be negative, got {value}")
    return int(value)


def base64_bytes(obj: dict[str, Any], name: str, path: str) -> bytes:
    value = field(obj, name, str, path=path)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(f"field '{path}.{name}' is not valid base64") from None
