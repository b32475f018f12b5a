"""`streamgen.remote.protocol`: parsing client messages, formatting replies."""

import json

import numpy as np
import pytest

from streamgen.remote import protocol


def test_each_request_kind():
    message = protocol.parse_message(json.dumps([
        {"id": "a", "x": [0.1, 2, -3e-5]},
        {"id": "a", "open": {"stop": [{"class_name": "StopHead", "config": {"threshold": 0.7}}],
                             "max_steps": 5, "sampler": "top-k", "seed": 7}},
        {"id": "b", "open": None},
        {"id": "a", "reset": True}, {"id": "a", "close": True},
        {"id": "a", "get_state": True}, {"id": "a", "set_state": {"format": "x"}},
    ]))
    assert not message.bare
    assert [(r.id, r.action) for r in message.requests] == [
        ("a", "step"), ("a", "open"), ("b", "open"), ("a", "reset"), ("a", "close"),
        ("a", "get_state"), ("a", "set_state")]
    assert message.requests[0].value == [0.1, 2, -3e-5]
    assert message.requests[1].value["max_steps"] == 5
    assert message.requests[1].value["sampler"] == "top-k"
    assert message.requests[1].value["seed"] == 7
    assert message.requests[2].value == {}


@pytest.mark.parametrize("item, error", [
    (5, 'request 0: expected a JSON object with an "id", got a number (5)'),
    ({"x": [1]}, 'request 0: expected "id" to be a string of at most 256 characters, got None'),
    ({"id": 3, "x": [1]}, "got 3"),
    ({"id": "a" * 257, "x": [1]}, "at most 256"),
    ({"id": "a"}, "got 0 actions []"),
    ({"id": "a", "x": [1], "reset": True}, "got 2 actions ['x', 'reset']"),
    ({"id": "a", "x": [1], "foo": 1}, "got the unknown keys ['foo']"),
    ({"id": "a", "x": [1, "2"]}, 'expected "x" to be an array of numbers'),
    ({"id": "a", "x": [True]}, 'expected "x" to be an array of numbers'),
    # two keys, like the common step, but not one: the full check names them
    ({"id": "a", "x": [1, None]}, 'expected "x" to be an array of numbers'),
    ({"id": "a", "x": [[1]]}, 'expected "x" to be an array of numbers'),
    ({"id": "a", "x": {"0": 1}}, 'expected "x" to be an array of numbers'),
    ({"x": [1], "y": 2}, 'expected "id" to be a string'),
    ({"id": "a", "y": [1]}, "got the unknown keys ['y']"),
    ({"id": "a", "reset": 1}, 'expected "reset": true, got 1'),
    ({"id": "a", "open": {"stop": [], "cap": 3}},
     "optional keys ['stop', 'max_steps', 'sampler', 'seed']"),
])
def test_bad_requests_fail_alone(item, error):
    message = protocol.parse_message(json.dumps([item, {"id": "ok", "x": [1]}]))
    bad, good = message.requests
    assert bad.action == "invalid" and error in bad.value
    assert good.action == "step"


def test_bare_message_and_empty():
    message = protocol.parse_message("[0.5, 0, 0.1]")
    assert message.bare and message.requests[0].id == protocol.DEFAULT_ID
    assert message.requests[0].value == [0.5, 0, 0.1]
    assert protocol.parse_message("[]").requests == []


@pytest.mark.parametrize("text, error", [
    ("[0.5, 0, ", "malformed JSON: Expecting value"),
    ('{"id": "a"}', "expected a JSON array of requests"),
    ("[NaN, 1]", "malformed JSON: NaN is not a JSON number"),
    ("[" * 100000 + "]" * 100000, "malformed JSON"),
])
def test_malformed_messages(text, error):
    with pytest.raises(protocol.ProtocolError, match=None) as info:
        protocol.parse_message(text)
    assert error in str(info.value)


def test_reply_items_round_trip():
    frames = np.array([[0.25, -0.0]], np.float32)
    text = protocol.reply([
        protocol.out_item("a", frames), protocol.out_item("b", np.zeros((0, 2))),
        protocol.ok_item("c"), protocol.error_item(None, "bad"),
        protocol.state_item("d", {"format": "f"})])
    assert text.startswith('[{"id":"a","out":[[0.25,-0]]},{"id":"b","out":[]},')
    items = protocol.parse_reply(text)
    assert items[0]["out"] == [[0.25, 0.0]]
    assert str(items[0]["out"][0][1]) == "-0.0"  # the sign survives
    assert items[2] == {"id": "c", "ok": True}
    assert items[3] == {"id": None, "error": "bad"}
    assert items[4] == {"id": "d", "state": {"format": "f"}}
    assert protocol.bare_reply(frames) == "[[0.25,-0]]"
    assert json.loads(protocol.bare_reply(error="no")) == {"error": "no"}


def test_step_request_is_exact():
    x = np.array([0.1, 1 / 3, -2.5], np.float32)
    item = json.loads(protocol.step_request("s1", x))
    assert item["id"] == "s1"
    assert np.array_equal(np.array(item["x"], np.float32), x)
