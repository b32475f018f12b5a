"""Browsers and the server: the `Origin` check and the subprotocol token.

Pure (no Ray): the replica calls these on every WebSocket handshake and on
every HTTP route but `/healthz`.

- `Origins(allowed)`: a request without an `Origin` header (a program) is
  allowed; a same-origin one (the `Origin`'s host and port are those of the
  `Host` the request was sent to) is allowed; any other origin (`null`
  included) is refused unless listed (`--allow-origin URL`, repeatable; `*`
  allows every origin, only when said).
- `offered_subprotocols(headers)` / `subprotocol_token(offered)`: a browser
  cannot set `Authorization` on a WebSocket, so it offers the token as a
  subprotocol, as Kubernetes does: `["streamgen.v1", "bearer.TOKEN"]`. The
  server answers with `streamgen.v1` only (`SUBPROTOCOL`), never the token.
  A token a browser sends this way must be an HTTP token (letters, digits
  and ``!#$%&'*+-.^_`|~``).
"""

import hmac
import urllib.parse

from streamgen.serve import limits

SUBPROTOCOL = "streamgen.v1"
TOKEN_PREFIX = "bearer."
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _hostport(netloc, scheme):
    """`"Example.com:8000"` -> `("example.com", 8000)`; `None` if malformed."""
    try:
        parts = urllib.parse.urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower(), port if port is not None else DEFAULT_PORTS.get(scheme)


def normalize(origin):
    """An origin as `scheme://host:port` (lower case, the port always said).

    Args:
        origin: e.g. `"https://Example.com"`, `"http://127.0.0.1:8000/"`.

    Returns:
        The normalized string, or `None` if `origin` is not a URL with a
        scheme and a host (`"null"`, say).

    Example:

    >>> normalize("HTTPS://Example.com/")
    'https://example.com:443'
    """
    try:
        parts = urllib.parse.urlsplit(origin.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.netloc:
        return None
    hostport = _hostport(parts.netloc, scheme)
    if hostport is None or hostport[1] is None:
        return None
    return f"{scheme}://{hostport[0]}:{hostport[1]}"


class Origins:
    """Which `Origin`s a replica accepts.

    Args:
        allowed: origins allowed besides the server's own, e.g.
            `["https://app.example.com"]`; `"*"` allows every origin.

    Raises:
        ValueError: an entry that is neither `"*"` nor an `http(s)://host[:port]`
            URL.

    Example:

    >>> origins = Origins(["https://app.example.com"])
    >>> origins.allowed({"host": "127.0.0.1:8000"})          # no Origin: a program
    True
    >>> origins.allowed({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"})
    True
    >>> origins.allowed({"host": "127.0.0.1:8000", "origin": "https://evil.example"})
    False
    """

    def __init__(self, allowed=()):
        allowed = [allowed] if isinstance(allowed, str) else list(allowed or ())
        self.any = "*" in allowed
        self.listed = set()
        for origin in allowed:
            if origin == "*":
                continue
            normal = normalize(origin)
            if normal is None:
                raise ValueError(
                    f"Received an invalid value for argument `allow_origin`, expected '*' or "
                    f"a URL like 'https://app.example.com[:port]', got {origin!r}.")
            self.listed.add(normal)

    def allowed(self, headers):
        """Whether a request with these headers may proceed.

        Args:
            headers: a mapping with lower-case keys (Starlette's `Headers`,
                or a dict).
        """
        origin = headers.get("origin")
        if origin is None:
            return True
        if self.any:
            return True
        normal = normalize(origin)
        if normal is None:  # "null" (sandboxed frames, file://) or garbage
            return False
        if normal in self.listed:
            return True
        host = headers.get("host")
        if not host:
            return False
        scheme = normal.split("://", 1)[0]
        return _hostport(host, scheme) == _hostport(normal.split("://", 1)[1], scheme)


def offered_subprotocols(headers):
    """The subprotocols a WebSocket client offers (`Sec-WebSocket-Protocol`), in order."""
    value = headers.get("sec-websocket-protocol") or ""
    return [p.strip() for p in value.split(",") if p.strip()]


def subprotocol_token(offered):
    """The token of a `bearer.TOKEN` subprotocol among `offered`, or `None`."""
    for protocol in offered:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol[len(TOKEN_PREFIX):]
    return None


def token_matches(expected, headers, offered=()):
    """Whether a request carries the token: `Authorization: Bearer T` (read
    as `limits.authorized` reads it, on every route), or (a WebSocket) the
    subprotocol `bearer.T`. Compared in constant time.

    Args:
        expected: the token (str); `None` or `""`: no token is needed.
        headers: the request's headers (lower-case keys).
        offered: the offered subprotocols (`offered_subprotocols`).
    """
    if not expected:
        return True
    if limits.authorized(headers.get("authorization", ""), expected):
        return True
    token = subprotocol_token(offered)
    return token is not None and hmac.compare_digest(token.encode("utf-8", "replace"),
                                                     expected.encode("utf-8"))


def accepted_subprotocol(offered):
    """What the server answers in `Sec-WebSocket-Protocol`: `SUBPROTOCOL` if
    offered, else nothing (`None`). Never the token."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None
