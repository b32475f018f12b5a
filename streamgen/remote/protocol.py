"""The WebSocket protocol of `streamgen serve`: parse requests, format replies.

Pure (json, numpy): the server and the client (`streamgen.remote.client`) share it,
and it is tested without Ray. See `docs/serving.md` for the protocol.

A client message is a JSON array of requests, each naming a stream by a
client-chosen string `"id"` and holding exactly one action:

    {"id": "a", "x": [0.1, 0.2, 0.3]}                  one outer step
    {"id": "a", "open": {"stop": [...], "max_steps": 5,
                         "sampler": {"class_name": "TopK", "config": {"k": 3}},
                         "seed": 7}}
    {"id": "a", "reset": true}      {"id": "a", "close": true}
    {"id": "a", "get_state": true}  {"id": "a", "set_state": STATE}

`open`'s keys are optional: `sampler` is what `sg.samplers.get` takes in
JSON (a name or a `{"class_name", "config"}` object), `seed` an integer in
`[0, 2**32)` (none: the server draws a fresh one, which the stream's STATE
carries); the server checks them against its model (`serve.session`).

The reply is one JSON array with one item per request, in order:
`{"id": "a", "out": [[...], ...]}`, `{"id": "a", "state": STATE}`,
`{"id": "a", "ok": true}` or `{"id": "a", "error": "..."}`.

A message that is a bare array of numbers (`[0.1, 0.2, 0.3]`) is a step of
the connection's default stream (id `""`), answered by the bare `Out[i]`
(`[[...], ...]`), or by `{"error": "..."}`.
"""

import dataclasses
import json
from typing import Any, List, Optional

from streamgen import checks
from streamgen.data import text as jsontext
from streamgen.data.text import frames_json

PATH = "/v1/streams"
DEFAULT_ID = ""  # the stream of bare messages
MAX_ID_CHARS = 256
MAX_REQUESTS_PER_MESSAGE = 10_000  # beyond: the message is one error item
MAX_INT_DIGITS = 4000  # a longer JSON integer is read as a float (an infinity)
ACTIONS = ("x", "open", "reset", "close", "get_state", "set_state")
OPEN_KEYS = ("stop", "max_steps", "sampler", "seed")


class ProtocolError(ValueError):
    """A message that is not a JSON array of requests (one error reply)."""


@dataclasses.dataclass
class Request:
    """One request of a message.

    Attributes:
        id: the stream's id (a string), or `None` if the request had none.
        action: `"step"`, `"open"`, `"reset"`, `"close"`, `"get_state"`,
            `"set_state"`, or `"invalid"` (then `value` is the error text).
        value: the action's argument: the input list for `"step"`, the
            `open` object, the `STATE` for `"set_state"`.
    """

    id: Optional[str]
    action: str
    value: Any = None


@dataclasses.dataclass
class Message:
    """A parsed client message: its requests, and whether it was bare."""

    requests: List[Request]
    bare: bool = False


def _no_constant(name):
    raise ProtocolError(f"malformed JSON: {name} is not a JSON number")


def _int(text):
    """A JSON integer; one too long for `int` (Python refuses over 4,300
    digits) is a float (`inf`), refused later like any non-finite number."""
    return int(text) if len(text) <= MAX_INT_DIGITS else float(text)


def loads(text):
    """`json.loads` that refuses NaN/Infinity; `ProtocolError` if malformed.

    Integers of any length are read (see `_int`).
    """
    try:
        return jsontext.loads(text, parse_constant=_no_constant, parse_int=_int)
    except ProtocolError:
        raise
    except ValueError as error:  # "bad JSON: <reason>"
        raise ProtocolError(f"malformed JSON: {str(error).removeprefix('bad JSON: ')}") \
            from None


_NUMBER_TYPES = {int, float}  # not bool: JSON's true and false are no numbers


def _is_number(value):
    return type(value) in _NUMBER_TYPES


def parse_message(text, max_requests=MAX_REQUESTS_PER_MESSAGE):
    """A client message (text) -> a `Message`.

    Args:
        text: str or bytes, the WebSocket message.
        max_requests: the most requests of one message.

    Returns:
        A `Message`; a request that is malformed on its own has action
        `"invalid"` and the error as its value (the others still run).

    Raises:
        ProtocolError: malformed JSON, not a JSON array, or more than
            `max_requests` requests.
    """
    data = loads(text)
    if not isinstance(data, list):
        raise ProtocolError(
            "expected a JSON array of requests (or of numbers: a step of the "
            f"default stream), got {_kind(data)}")
    if data and all(_is_number(v) for v in data):
        return Message([Request(DEFAULT_ID, "step", data)], bare=True)
    if len(data) > max_requests:
        raise ProtocolError(
            f"a message holds at most {max_requests} requests, got {len(data)}; "
            "send them in several messages")
    return Message([parse_request(item, index) for index, item in enumerate(data)])


def parse_request(item, index=0):
    """One element of a message -> a `Request` (action `"invalid"` if bad)."""
    # The common request, a step `{"id": "...", "x": [numbers]}`, in a few
    # operations (a server parses tens of thousands a second); anything
    # else, valid or not, takes the full path below.
    if type(item) is dict and len(item) == 2:
        stream_id, value = item.get("id"), item.get("x")
        if (type(stream_id) is str and len(stream_id) <= MAX_ID_CHARS
                and type(value) is list and set(map(type, value)) <= _NUMBER_TYPES):
            return Request(stream_id, "step", value)
    if not isinstance(item, dict):
        return Request(None, "invalid",
                       f"request {index}: expected a JSON object with an \"id\", got {_kind(item)}")
    stream_id = item.get("id")
    if not isinstance(stream_id, str) or len(stream_id) > MAX_ID_CHARS:
        return Request(None, "invalid",
                       f"request {index}: expected \"id\" to be a string of at most "
                       f"{MAX_ID_CHARS} characters, got {checks.describe(stream_id)}")
    actions = [key for key in item if key in ACTIONS]
    unknown = sorted(key for key in item if key not in ACTIONS and key != "id")
    if unknown or len(actions) != 1:
        found = f"the unknown keys {unknown}" if unknown else f"{len(actions)} actions {actions}"
        return Request(stream_id, "invalid",
                       f"expected exactly one of the keys {list(ACTIONS)} beside \"id\", "
                       f"got {found}")
    action = actions[0]
    value = item[action]
    if action == "x":
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            return Request(stream_id, "invalid",
                           f"expected \"x\" to be an array of numbers, got "
                           f"{checks.describe(value)}")
        return Request(stream_id, "step", value)
    if action in ("reset", "close", "get_state"):
        if value is not True:
            return Request(stream_id, "invalid",
                           f"expected \"{action}\": true, got {checks.describe(value)}")
        return Request(stream_id, action)
    if action == "open":
        if value is None:
            value = {}
        if not isinstance(value, dict) or set(value) - set(OPEN_KEYS):
            return Request(stream_id, "invalid",
                           f"expected \"open\" to be an object with the optional keys "
                           f"{list(OPEN_KEYS)}, got {checks.describe(value)}")
        return Request(stream_id, "open", value)
    return Request(stream_id, "set_state", value)


def _kind(value):
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({checks.describe(value)})"


# ---------------------------------------------------------------------- #
# Replies (server side). Items are JSON text, joined without re-encoding.
# ---------------------------------------------------------------------- #
def out_item(stream_id, frames):
    """`{"id": ..., "out": [[...], ...]}` for `Out[i]` `(L, output_size)`."""
    return '{"id":' + json.dumps(stream_id) + ',"out":' + frames_json(frames) + "}"


def state_item(stream_id, state):
    """`{"id": ..., "state": STATE}`."""
    return json.dumps({"id": stream_id, "state": state}, separators=(",", ":"))


def ok_item(stream_id):
    """`{"id": ..., "ok": true}`."""
    return '{"id":' + json.dumps(stream_id) + ',"ok":true}'


def error_item(stream_id, message):
    """`{"id": ..., "error": "..."}` (`"id": null` when there was none)."""
    return json.dumps({"id": stream_id, "error": str(message)}, separators=(",", ":"))


def reply(items):
    """The reply message: a JSON array of the items (JSON text each)."""
    return "[" + ",".join(items) + "]"


def bare_reply(frames=None, error=None):
    """The reply to a bare message: `Out[i]`, or `{"error": "..."}`."""
    if error is not None:
        return json.dumps({"error": str(error)})
    return frames_json(frames)


# ---------------------------------------------------------------------- #
# Client side.
# ---------------------------------------------------------------------- #
def step_request(stream_id, x):
    """`{"id": ..., "x": [...]}` as JSON text; `x` is a float32 `(I,)` array."""
    return '{"id":' + json.dumps(stream_id) + ',"x":[' + ",".join(map(repr, x.tolist())) + "]}"


def request(stream_id, action, value=True):
    """Any other request as JSON text."""
    return json.dumps({"id": stream_id, action: value}, separators=(",", ":"))


def _parse_int(text):
    return -0.0 if text == "-0" else _int(text)  # keeps the sign of a -0 frame value


def parse_reply(text):
    """A server reply -> its items (a list of dicts), or a bare value.

    `-0` stays a negative zero, so frames print back byte for byte.

    Raises:
        ProtocolError: malformed JSON.
    """
    try:
        return jsontext.loads(text, parse_int=_parse_int)
    except ValueError as error:
        raise ProtocolError(f"malformed reply from the server: {error}") from None

