"""`streamgen serve`: many live streams over WebSocket, on Ray Serve."""

import os
import signal
import socket
import threading
import time

import click

from streamgen.cli import common

DRAIN_TIMEOUT_S = 5.0


@click.command()
@common.model_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (0.0.0.0: every interface; use --token then).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="HTTP / WebSocket port.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="Replicas of the model; each WebSocket connection lives on one.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
              metavar="N", help="Most stream steps in one batched call (1: no batching).")
@click.option("--batch-wait-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="F", help="How long a tick waits for more steps once one is ready "
                               "(steps arriving during a tick join the next anyway).")
@click.option("--max-streams", type=click.IntRange(min=1), default=10_000, show_default=True,
              metavar="N", help="Open streams per replica; beyond, an open is refused.")
@click.option("--max-streams-per-connection", type=click.IntRange(min=1), default=1000,
              show_default=True, metavar="N",
              help="Open streams per connection; beyond, an open is refused.")
@click.option("--max-connections", type=click.IntRange(min=1), default=1000, show_default=True,
              metavar="N", help="Connections per replica; beyond, one is refused at once "
                               "(WebSocket close 1013, HTTP 503).")
@click.option("--max-queued-messages", type=click.IntRange(min=1), default=16,
              show_default=True, metavar="N",
              help="Unanswered messages per connection; beyond, it is closed (1013).")
@click.option("--abuse-backoff", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="S", help="After a connection is closed for unanswered messages (1013), "
                               "refuse new ones from its address for S seconds, doubled per "
                               "repeat up to 60 s (HTTP 429; 0: never).")
@click.option("--connection-timeout", type=click.FloatRange(min=0), default=300.0,
              show_default=True, metavar="S",
              help="Close a connection after S seconds without a message (0: never).")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              metavar="S", help="Drop a stream after S seconds without a request (0: never).")
@click.option("--token", envvar="STREAMGEN_TOKEN", metavar="T",
              help="Require 'Authorization: Bearer T' (WebSocket and HTTP, not /healthz). "
                   "Default: $STREAMGEN_TOKEN, else no token.")
@click.option("--allow-origin", "allow_origins", multiple=True, metavar="URL",
              help="Let browser pages of this origin (e.g. https://app.example.com) use "
                   "the server besides its own pages; repeatable; '*' allows any. "
                   "Requests without an Origin header (programs) are always allowed.")
@click.option("--playground/--no-playground", default=True, show_default=True,
              help="Serve the playground page (try the model in a browser) at GET /.")
@click.option("--address", metavar="ADDR",
              help="Join a running Ray cluster (e.g. 10.0.0.1:6379 from 'ray start --head'; "
                   "'auto' finds a local one) instead of starting a local one.")
def serve(model_path, host, port, replicas, max_batch_size, batch_wait_ms, max_streams,
          max_streams_per_connection, max_connections, max_queued_messages, abuse_backoff,
          connection_timeout, idle_timeout, token, allow_origins, playground, address):
    """Serve streams over WebSocket, batched across streams, on Ray Serve.

    Starts a local Ray cluster (or joins one with --address), deploys the
    model on --replicas replicas, prints the URL, and serves until Ctrl-C
    or SIGTERM; then replies to requests already received, closes the
    connections (code 1001) and stops.

    Protocol: WebSocket at ws://HOST:PORT/v1/streams, JSON arrays of
    requests for many streams per message ({"id": "a", "x": [...]}); a bare
    array of numbers steps the default stream. HTTP: GET /healthz, GET
    /v1/model, POST /v1/lines (NDJSON in, the lines of 'streamgen stream'
    out). See docs/serving.md. A .tflite model runs on LiteRT.

    \b
    Example:
      streamgen serve --port 8000
      streamgen serve --model m.tflite --replicas 2 --token s3cret
      printf '0.5 0 0.1\\n' | streamgen stream --url ws://127.0.0.1:8000
    """
    import streamgen as sg

    _check_origins(allow_origins)
    path = model_path or sg.default_model_path()
    info = _model_info(model_path)
    if address is None:
        _check_port(host, port)
    import logging

    from streamgen import quiet

    with quiet.silenced_fd2():  # Ray's start-up lines (the cluster's logs keep them)
        import ray
        from ray import serve

        from streamgen.serve import app as app_lib

        try:
            local = address is None or address.split(":")[0] in ("127.0.0.1", "localhost")
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=False,
                     namespace=app_lib.CONTROL_NAMESPACE,
                     # A loopback cluster (ours, or `ray start --node-ip-address
                     # 127.0.0.1`): this driver's node is 127.0.0.1 too.
                     **({"_node_ip_address": "127.0.0.1"} if local else {}))
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise common.CliError(f"cannot start or join the Ray cluster: {error}") from None
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    control = None
    try:
        with quiet.silenced_fd2():
            serve.start(http_options={"host": host, "port": port})
            control = app_lib.Control.options(name=app_lib.control_name(),
                                              namespace=app_lib.CONTROL_NAMESPACE).remote()
            application = app_lib.build_app(
                path, replicas=replicas, max_batch_size=max_batch_size,
                batch_wait_ms=batch_wait_ms, max_streams=max_streams,
                idle_timeout=idle_timeout or None, token=token or None, model_info=info,
                control=app_lib.control_name(),
                max_streams_per_connection=max_streams_per_connection,
                max_connections=max_connections, max_queued_messages=max_queued_messages,
                abuse_backoff=abuse_backoff, connection_timeout=connection_timeout or None,
                allow_origins=allow_origins, playground=playground)
            serve.run(application, name=app_lib.APP_NAME, route_prefix="/")
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        click.echo(f"serving {info['model']} at ws://{shown}:{port}{'/v1/streams'} "
                   f"({replicas} replica{'s' if replicas > 1 else ''}; Ctrl-C to stop)")
        while not stop.wait(0.5):
            pass
        _drain(ray, control)
    except Exception as error:  # noqa: BLE001  (Ray's many kinds: one line, no traceback)
        raise common.CliError(f"serving failed: {type(error).__name__}: {error}") from None
    finally:
        with quiet.silenced_fd2():
            try:
                if address is None:
                    serve.shutdown()
                else:  # leave the cluster's other applications alone
                    serve.delete(app_lib.APP_NAME)
            except Exception:  # noqa: BLE001
                pass
            if control is not None:
                ray.kill(control)
            ray.shutdown()
    common.report("stopped")


def _drain(ray, control):
    """Replicas answer what they received, then close every connection (1001)."""
    ray.get(control.drain.remote())
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    time.sleep(0.6)  # every replica has polled the flag at least once
    while time.monotonic() < deadline and ray.get(control.open_connections.remote()):
        time.sleep(0.1)


def _model_info(model_path):
    """What `streamgen info --json` prints; opens (so checks) the model file first."""
    from streamgen.cli.commands_model import describe

    return describe(common.open_runtime(model_path), model_path)


def _check_origins(allow_origins):
    """A clear usage error for an --allow-origin that is not an origin."""
    from streamgen.serve.origins import normalize

    for origin in allow_origins:
        if origin != "*" and normalize(origin) is None:
            raise click.BadParameter(
                f"expected '*' or a URL like https://app.example.com[:port], got {origin!r}",
                param_hint="'--allow-origin'")


def _check_port(host, port):
    """A clear error for a port in use, before Ray starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise common.CliError(f"cannot listen on {host}:{port}: {error.strerror}") from None
