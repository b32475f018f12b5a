"""The playground page of `streamgen serve` (`GET /`): one static page.

`page()` returns `static/index.html` with `playground.css` and
`playground.js` put inline: one response, no other request but the
protocol's own (`v1/model`, `v1/streams`, relative to the page), so the
page works at any path prefix behind a proxy and with no internet.
"""

import functools
import importlib.resources

# The page may load nothing from elsewhere and connect only to its server.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'self'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
           "X-Content-Type-Options": "nosniff"}


@functools.lru_cache(maxsize=1)
def page():
    """The page's HTML (str)."""
    static = importlib.resources.files("streamgen.serve").joinpath("static")
    html = static.joinpath("index.html").read_text("utf-8")
    for name in ("playground.css", "playground.js"):
        html = html.replace(f"/*{name}*/", static.joinpath(name).read_text("utf-8"))
    return html
