"""Field validation shared by the codecs: every failure names the field it is about.

Frames come from peers on an open network, so ``parse_object`` refuses, as a ``FrameError``, what
``json.loads`` accepts but the rest of the bridge cannot carry: integers too long to convert
(Python refuses over 4,300 digits with a plain ``ValueError``), ``NaN`` and infinities (not JSON,
and echoed they break the app's parser), nesting deeper than ``MAX_NESTING_DEPTH`` (re-encoded
deeper in the stack it could hit the recursion limit), and lone UTF-16 surrogates (``"\\ud800"``
parses into a string that cannot be encoded as UTF-8, so echoing it to the other socket would fail
mid-call). The checks after parsing walk the object only when the raw text could hold the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

MAX_NUMBER_CHARS = 32  # a JSON number literal; a 64-bit integer has at most 20 digits
MAX_NESTING_DEPTH = 32  # objects and arrays; protocol frames nest 3 deep, custom parameters a little more
MAX_COUNTER_DIGITS = 20  # a media stream counter fits 64 bits
SHOWN_CHARS = 60  # of a peer's value quoted in an error message: reasons get logged

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")


class FrameError(ValueError):
    """A frame from the peer is invalid; the message says which field and why."""


def show(value: str | None) -> str:
    """``repr(value)``, cut short for an error message."""
    if value is None or len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def utf8_safe(text: str) -> str:
    """``text`` with any lone surrogate replaced, so it can be encoded as UTF-8 (for echoes and logs)."""
    if text.isascii() or _SURROGATE_RE.search(text) is None:
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise FrameError(f"not JSON: a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS})")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise FrameError(f"not JSON: a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(literal)
    if not math.isfinite(value):
        raise FrameError(f"not JSON: number {literal} is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise FrameError(f"not JSON: {name}")


def parse_object(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raise FrameError("binary frame (expected a JSON text frame)")
    if not raw.isascii() and _SURROGATE_RE.search(raw):
        raise FrameError("not UTF-8 text: holds a lone surrogate")
    try:
        obj = json.loads(raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise FrameError("not JSON: nested too deeply") from None
    except FrameError:
        raise
    except ValueError as exc:  # anything else json.loads refuses is the frame's fault too
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"expected a JSON object, got {type(obj).__name__}")
    strings = "\\u" in raw and _SURROGATE_ESCAPE_RE.search(raw) is not None
    if strings or raw.count("{") + raw.count("[") > MAX_NESTING_DEPTH:
        _check_values(obj, strings=strings)
    return obj


def _check_values(obj: dict[str, Any], *, strings: bool) -> None:
    """Refuse nesting beyond ``MAX_NESTING_DEPTH`` and, if ``strings``, lone surrogates, naming the field.

    Iterative, so a frame's depth never meets the recursion limit here. Paths are kept as linked
    pairs and spelt out only for the error.
    """
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(obj, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_NESTING_DEPTH:
                raise FrameError(f"field '{_path(path)}' nests deeper than {MAX_NESTING_DEPTH} levels")
            for key, item in value.items():
                if strings and _SURROGATE_RE.search(key):
                    raise FrameError(f"a field name in '{_path(path) or '(frame)'}' holds a lone surrogate "
                                     f"({show(key)}), which UTF-8 cannot encode")
                stack.append((item, depth + 1, (path, key)))
        elif isinstance(value, list):
            if depth > MAX_NESTING_DEPTH:
                raise FrameError(f"field '{_path(path)}' nests deeper than {MAX_NESTING_DEPTH} levels")
            stack.extend((item, depth + 1, (path, i)) for i, item in enumerate(value))
        elif strings and isinstance(value, str) and _SURROGATE_RE.search(value):
            raise FrameError(f"field '{_path(path)}' holds a lone surrogate ({show(value)}), "
                             "which UTF-8 cannot encode")


def _path(path: tuple[Any, ...]) -> str:
    parts: list[str] = []
    while path:
        path, key = path
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            shown = key if len(key) <= SHOWN_CHARS else f"{key[:SHOWN_CHARS]}..."
            parts.append(f".{utf8_safe(shown)}")
    return "".join(reversed(parts)).lstrip(".")


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


def bounded_str(obj: dict[str, Any], name: str, limit: int, *, path: str = "", required: bool = True,
                default: str | None = None) -> Any:
    """A string ``field`` of at most ``limit`` characters."""
    value = field(obj, name, str, path=path, required=required, default=default)
    if isinstance(value, str) and len(value) > limit:
        where = f"{path}.{name}" if path else name
        raise FrameError(f"field '{where}' holds {len(value)} characters, more than the limit of {limit}")
    return value


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# Custom parameters are set by whoever places the call, so they are bounded: no real use needs more
# (Twilio caps a <Parameter>'s name and value together at 500 characters). A welcome greeting is one
# of them; the session layer bounds that further.
MAX_CUSTOM_PARAMETERS = 64
MAX_PARAMETER_NAME_CHARS = 256
MAX_PARAMETER_VALUE_CHARS = 4096  # a string's characters, or another JSON value's encoded length


def custom_parameters(obj: dict[str, Any], name: str, path: str, *,
                      strings_only: bool) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The ``start`` frame's custom parameters within the limits, and why each of the others was dropped.

    A parameter over a limit (or not a string, where ``strings_only``) is dropped, not the stream:
    the call goes on without it, and the reasons are for the runtime to log as warnings. Past
    ``MAX_CUSTOM_PARAMETERS`` the rest are dropped with one reason, so the reasons stay bounded too.
    """
    where = f"{path}.{name}"
    params = field(obj, name, dict, path=path, required=False, default={})
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for i, (key, value) in enumerate(params.items()):
        if i == MAX_CUSTOM_PARAMETERS:
            dropped.append(f"field '{where}': {len(params) - i} parameters past the first "
                           f"{MAX_CUSTOM_PARAMETERS} dropped")
            break
        if len(key) > MAX_PARAMETER_NAME_CHARS:
            dropped.append(f"field '{where}': a parameter name of {len(key)} characters ({show(key)}), "
                           f"more than {MAX_PARAMETER_NAME_CHARS}, dropped")
            continue
        param = f"{where}.{key}"
        if strings_only and not isinstance(value, str):
            got = "null" if value is None else type(value).__name__
            dropped.append(f"field '{param}' must be a string, got {got}: dropped")
            continue
        size = len(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        if size > MAX_PARAMETER_VALUE_CHARS:
            dropped.append(f"field '{param}' holds {size} characters, more than {MAX_PARAMETER_VALUE_CHARS}: "
                           "dropped")
            continue
        kept[key] = value
    return kept, tuple(dropped)


def decimal(text: str, where: str, max_digits: int = MAX_COUNTER_DIGITS) -> int:
    """A non-negative decimal string as an integer; too many digits is an error, not a huge number."""
    if not (text.isascii() and text.isdigit()):
        raise FrameError(f"field '{where}' must be a decimal string, got {show(text)}")
    if len(text) > max_digits:
        raise FrameError(f"field '{where}' has {len(text)} digits, more than {max_digits}")
    return int(text)


def counter(obj: dict[str, Any], name: str, path: str) -> int:
    """A media stream counter (sequence number, chunk, timestamp): a decimal string on the wire;
    non-negative integers are tolerated."""
    where = f"{path}.{name}" if path else name
    value = field(obj, name, (str, int), path=path)
    if isinstance(value, str):
        return decimal(value, where)
    if value < 0:
        raise FrameError(f"field '{where}' must not be negative, got {value}")
    if value >= 10 ** MAX_COUNTER_DIGITS:
        raise FrameError(f"field '{where}' has more than {MAX_COUNTER_DIGITS} digits")
    return int(value)


def base64_bytes(obj: dict[str, Any], name: str, path: str) -> bytes:
    value = field(obj, name, str, path=path)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError(f"field '{path}.{name}' is not valid base64") from None
