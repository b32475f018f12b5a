"""`streamgen.serve.origins`: the Origin check and the subprotocol token (pure, fast)."""

import pytest

from streamgen.serve.origins import (
    SUBPROTOCOL, Origins, accepted_subprotocol, normalize, offered_subprotocols,
    subprotocol_token, token_matches)


@pytest.mark.parametrize("origin, expected", [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("HTTPS://Example.COM/", "https://example.com:443"),
    ("http://example.com", "http://example.com:80"),
    ("http://[::1]:9", "http://::1:9"),
    ("null", None), ("", None), ("file:///tmp/x.html", None), ("example.com", None),
    ("http://h:99999", None),
])
def test_normalize(origin, expected):
    assert normalize(origin) == expected


HOST = {"host": "127.0.0.1:8000"}


@pytest.mark.parametrize("headers, allowed", [
    ({}, True),  # no Host, no Origin: a program
    (HOST, True),
    ({**HOST, "origin": "http://127.0.0.1:8000"}, True),
    ({**HOST, "origin": "https://127.0.0.1:8000"}, True),  # TLS proxy keeping Host
    ({"host": "example.com", "origin": "https://example.com"}, True),
    ({"host": "example.com:443", "origin": "https://example.com"}, True),
    ({"host": "Example.com", "origin": "http://example.com:80"}, True),
    ({**HOST, "origin": "http://127.0.0.1:8001"}, False),
    ({**HOST, "origin": "http://localhost:8000"}, False),
    ({**HOST, "origin": "null"}, False),
    ({**HOST, "origin": "https://evil.example"}, False),
    ({"origin": "http://127.0.0.1:8000"}, False),  # an Origin, no Host
    ({"host": "example.com", "origin": "https://example.com:8443"}, False),
])
def test_same_origin_only_by_default(headers, allowed):
    assert Origins().allowed(headers) is allowed


def test_allow_origin_list_and_star():
    origins = Origins(["https://app.example.com", "http://127.0.0.1:3000/"])
    assert origins.allowed({**HOST, "origin": "https://APP.example.com"})
    assert origins.allowed({**HOST, "origin": "https://app.example.com:443"})
    assert origins.allowed({**HOST, "origin": "http://127.0.0.1:3000"})
    assert not origins.allowed({**HOST, "origin": "http://app.example.com"})
    assert not origins.allowed({**HOST, "origin": "null"})
    star = Origins("*")
    assert star.allowed({**HOST, "origin": "null"}) and star.allowed({**HOST, "origin": "http://x"})
    with pytest.raises(ValueError, match=r"`allow_origin`.*got 'app.example.com'"):
        Origins(["app.example.com"])


def test_subprotocol_token():
    headers = {"sec-websocket-protocol": "streamgen.v1, bearer.s3cret"}
    offered = offered_subprotocols(headers)
    assert offered == [SUBPROTOCOL, "bearer.s3cret"]
    assert subprotocol_token(offered) == "s3cret"
    assert accepted_subprotocol(offered) == "streamgen.v1"  # never the token
    assert accepted_subprotocol(["bearer.s3cret"]) is None
    assert accepted_subprotocol([]) is None
    assert token_matches("s3cret", {}, offered)
    assert not token_matches("s3cret", {}, [SUBPROTOCOL, "bearer.s3cre"])
    assert not token_matches("s3cret", {}, [SUBPROTOCOL])
    assert token_matches("s3cret", {"authorization": "Bearer s3cret"}, [])
    assert not token_matches("s3cret", {"authorization": "Bearer wrong"}, [])
    assert token_matches(None, {}, []) and token_matches("", {}, [])
    # A wrong header does not spoil a right subprotocol, nor the reverse.
    assert token_matches("s3cret", {"authorization": "Bearer wrong"}, offered)
    assert token_matches("s3cret", {"authorization": "Bearer s3cret"}, ["bearer.no"])
    assert not token_matches("s3cret", {}, ["bearer.s3crét"])


def test_cli_allow_origin_is_checked_first():
    from click.testing import CliRunner

    from streamgen.cli.main import cli

    result = CliRunner().invoke(cli, ["serve", "--allow-origin", "app.example.com"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--allow-origin': expected '*' or a URL like "
        "https://app.example.com[:port], got 'app.example.com'")
    help_text = CliRunner().invoke(cli, ["serve", "-h"]).stdout
    assert "--allow-origin URL" in help_text and "--no-playground" in help_text
