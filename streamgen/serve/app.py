"""The Ray Serve application of `streamgen serve`: one deployment, FastAPI ingress.

Each replica opens the model once (`sg.open_runtime`: the compiled
TensorFlow step for a `.keras` model, LiteRT buckets for a `.tflite`
export), keeps the states of all its streams as rows of one `StateTable`,
and runs a `TickLoop`: every tick, ONE batched `runtime.step` over all the
streams of all its connections that have a step ready.

Routes (see `docs/serving.md`):

- `WS /v1/streams`: the multiplexed stream protocol (`protocol`).
- `GET /healthz`: `{"status": "ok", ...}` (no token needed).
- `GET /v1/model`: what `streamgen info --json` prints, plus the facts a
  client needs (`fingerprint`, `state_sizes`, `trained_max_steps`).
- `POST /v1/lines`: an NDJSON body of CLI input lines -> the lines
  `streamgen stream` prints, streamed as produced.

`build_app(...)` returns the bound application for `serve.run`.
"""

import asyncio
import concurrent.futures
import io
import logging
import math
import os
import tempfile
import time

import numpy as np
import ray
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from starlette.websockets import WebSocketDisconnect

from streamgen.remote import protocol
from streamgen.serve import limits
from streamgen.serve import metrics as metrics_lib
from streamgen.serve import origins as origins_lib
from streamgen.serve import playground
from streamgen.serve.batcher import Batcher, StateTable, TickLoop
from streamgen.serve.session import Session, expire_idle, format_bare, format_items

logger = logging.getLogger("ray.serve")

APP_NAME = "streamgen"
CONTROL_NAMESPACE = "streamgen"
MAX_MESSAGE_BYTES = 1 << 20  # a larger WebSocket message: close 1009
MAX_BODY_BYTES = limits.MAX_BODY_BYTES  # the body of POST /v1/lines
MAX_CONNECTIONS = limits.MAX_CONNECTIONS  # per replica; beyond: 503 / close 1013
DRAIN_POLL_S = 0.25

api = FastAPI(title="streamgen", docs_url=None, redoc_url=None, openapi_url=None)


@ray.remote(num_cpus=0)
class Control:
    """Shared by the replicas of one app: the drain flag, connection counts."""

    def __init__(self):
        self.draining = False
        self.connections = {}

    def drain(self):
        self.draining = True

    def poll(self, replica, connections):
        self.connections[replica] = connections
        return self.draining

    def open_connections(self):
        return sum(self.connections.values())


def control_name(app_name=APP_NAME):
    return f"{app_name}-control"


_LIMIT_DEFAULTS = dict(
    max_connections=limits.MAX_CONNECTIONS,
    max_streams_per_connection=limits.MAX_STREAMS_PER_CONNECTION,
    max_queued_messages=limits.MAX_QUEUED_MESSAGES,
    connection_timeout=limits.CONNECTION_TIMEOUT_S,
    max_requests_per_message=protocol.MAX_REQUESTS_PER_MESSAGE,
    max_reply_bytes=limits.MAX_REPLY_BYTES,
    max_body_bytes=limits.MAX_BODY_BYTES,
    body_timeout=limits.BODY_TIMEOUT_S,
    abuse_backoff=limits.ABUSE_BACKOFF_S,
)


# Helpers the class uses are defined above it: `serve.ingress` captures the
# class (by value) where it is defined.
def _unauthorized():
    return JSONResponse({"error": "missing or wrong token (Authorization: Bearer <token>)"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _forbidden_origin():
    return JSONResponse({"error": "this origin may not use the server (see --allow-origin)"},
                        status_code=403)


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)


def _read_lines_body(body, input_size):
    """`POST /v1/lines`'s body -> `(events, error)` (run in a worker thread)."""
    from streamgen.data.lines import BadLine, format_error, read_events

    events = []
    for event in read_events(io.BytesIO(body), input_size):
        if isinstance(event, BadLine):
            return None, format_error("<body>", event.line_no, event.message)
        events.append(event)
    return events, None


def _reason(text):
    """A close frame's reason: at most 123 bytes of UTF-8."""
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


@serve.deployment(
    # Each open WebSocket is one request; above our own cap, room for
    # /healthz and for refusals (build_app sets both).
    max_ongoing_requests=MAX_CONNECTIONS + limits.CONNECTION_HEADROOM,
    graceful_shutdown_timeout_s=5,
    health_check_period_s=5,
)
@serve.ingress(api)
class Server:
    """A replica: the model's runtime, a table of stream states, one tick loop.

    Args:
        model_name: the model file's name (its extension picks the runtime).
        model_bytes: the file's content (so that replicas on other nodes
            need no copy of it).
        options: dict with `max_batch_size`, `batch_wait_ms`, `max_streams`,
            `idle_timeout` (seconds or `None`), `token` (or `None`),
            `max_message_bytes`, `model_info` (dict or `None`),
            `control` (the `Control` actor's name, or `None`),
            `allow_origins` (origins allowed besides the server's own),
            `playground` (serve the page at `GET /`; default true),
            `metrics` (count metrics; default true), and the bounds of
            `limits` (see `build_app`).
    """

    def __init__(self, model_name, model_bytes, options):
        from streamgen.runtimes import open_runtime

        # The runtime reads the whole file as it opens: the copy can go at once
        # (a replica killed later leaves nothing behind in the temp folder).
        with tempfile.TemporaryDirectory(prefix="streamgen-serve-") as folder:
            path = os.path.join(folder, os.path.basename(model_name))
            with open(path, "wb") as file:
                file.write(model_bytes)
            self.runtime = open_runtime(path)
        self.options = dict(_LIMIT_DEFAULTS, **options)
        self.token = self.options.get("token") or None
        self.origins = origins_lib.Origins(self.options.get("allow_origins") or ())
        self.table = StateTable(self.runtime, max_streams=self.options["max_streams"])
        self.batcher = Batcher(self.table, self.options["max_batch_size"])
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "streamgen-step")
        self.ticks = TickLoop(self.batcher, self.options["batch_wait_ms"], self.executor)
        self.model_info = self._model_info(self.options.get("model_info"), model_name)
        self.connections = set()  # asyncio.Event per open WebSocket: set to drain it
        self.requests = 0  # POST /v1/lines in progress (they count as connections)
        self.backoff = limits.Backoff(self.options["abuse_backoff"])
        self.trimmer = limits.MemoryTrimmer()  # after refused bodies and abusers
        context = serve.get_replica_context()
        self.metrics_hub = metrics_lib.hub_name(context.app_name)
        self.metrics = metrics_lib.ReplicaMetrics(
            context.replica_id.unique_id, open_streams=lambda: len(self.table),
            connections=lambda: len(self.connections), ray_export=True, hub=self.metrics_hub,
        ) if self.options.get("metrics", True) else metrics_lib.NoMetrics()
        self.metrics.instrument(self.batcher)
        self.draining = False
        self._tasks = None
        # Warm up (the first call of a runtime plans or traces).
        self.runtime.step(np.zeros((1, self.runtime.input_size), np.float32),
                          self.runtime.initial_state(1))

    def _model_info(self, info, model_name):
        """`GET /v1/model`: `runtime.describe()` (what `streamgen info --json`
        prints), with the facts a client needs taken from this replica's runtime."""
        runtime = self.runtime
        info = dict(info) if info else {"model": os.path.basename(model_name),
                                        **runtime.describe()}
        info.update(fingerprint=runtime.fingerprint, state_sizes=runtime.state_sizes,
                    trained_max_steps=runtime.trained_max_steps,
                    runtime=type(runtime).__name__)
        return info

    # ------------------------------------------------------------------ #
    # Background: idle streams, drain.
    # ------------------------------------------------------------------ #
    def _start(self):
        if self._tasks is None:
            loop = asyncio.get_running_loop()
            self.ticks.start()
            self._tasks = [loop.create_task(self._housekeeping()),
                           loop.create_task(self._report_metrics())]

    async def _report_metrics(self):
        """Every second, this replica's metrics to the app's `MetricsHub` (its
        own task: a slow actor start never delays the housekeeping)."""
        while True:
            await asyncio.sleep(metrics_lib.REPORT_EVERY_S)
            await self.metrics.report(self.metrics_hub)

    async def _housekeeping(self):
        idle = self.options.get("idle_timeout")
        control = None
        name = self.options.get("control")
        replica = serve.get_replica_context().replica_id.unique_id
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(DRAIN_POLL_S if name else 1.0)
            if idle and time.monotonic() - last_sweep >= min(1.0, idle / 4):
                last_sweep = time.monotonic()
                dropped = expire_idle(self.table, idle)
                self.metrics.dropped_idle(dropped)
                if dropped:
                    logger.info("dropped %d idle stream(s) (--idle-timeout %g s)", dropped, idle)
            if name:
                try:
                    if control is None:
                        control = ray.get_actor(name, namespace=CONTROL_NAMESPACE)
                    draining = await control.poll.remote(replica, len(self.connections))
                except Exception:  # noqa: BLE001  (no control actor: never drain)
                    control, draining = None, False
                if draining and not self.draining:
                    self.draining = True
                    for event in list(self.connections):
                        event.set()

    # ------------------------------------------------------------------ #
    # Auth.
    # ------------------------------------------------------------------ #
    def _authorized(self, headers, offered=()):
        """`Authorization: Bearer T`, or (WebSocket) the subprotocol `bearer.T`."""
        return origins_lib.token_matches(self.token, headers, offered)

    def _at_cap(self):
        return len(self.connections) + self.requests >= self.options["max_connections"]

    def _cap_message(self):
        return (f"this server replica holds its maximum of {self.options['max_connections']} "
                "connections (--max-connections); try again later")

    # ------------------------------------------------------------------ #
    # HTTP.
    # ------------------------------------------------------------------ #
    @api.get("/healthz")
    def healthz(self):
        return {"status": "ok", "draining": self.draining}

    @api.get("/v1/model")
    def model(self, request: Request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        return self.model_info

    @api.get("/")
    def playground_page(self, request: Request):
        if not self.options.get("playground", True):
            return _error(404, "the playground page is off (streamgen serve --no-playground)")
        if not self.origins.allowed(request.headers):
            self.metrics.error("origin")
            return _forbidden_origin()
        return HTMLResponse(playground.page(), headers=playground.HEADERS)

    @api.get("/metrics")
    async def metrics_route(self, request: Request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        self._start()
        text = await self.metrics.scrape(self.metrics_hub)
        return Response(text, media_type=metrics_lib.CONTENT_TYPE)

    def _refused(self, request):
        """The 403 / 401 response for a request of another origin or without
        the token, else `None` (counted by kind)."""
        if not self.origins.allowed(request.headers):
            self.metrics.error("origin")
            return _forbidden_origin()
        if not self._authorized(request.headers):
            self.metrics.error("auth")
            return _unauthorized()
        return None

    @api.post("/v1/lines")
    async def lines(self, request: Request):
        from streamgen.data.lines import Reset, Vector
        from streamgen.data.text import frames_json

        refused = self._refused(request)
        if refused is not None:
            return refused
        wrong_type = limits.body_content_type_error(request.headers.get("content-type"))
        if wrong_type:
            self.metrics.error("bad_request")
            return _error(415, wrong_type)
        if self._at_cap():
            self.metrics.error("limit")
            return _error(503, self._cap_message())
        self.requests += 1
        done = True  # until the response owns the count
        try:
            # Bounded in size and time, read without quadratic copies, parsed
            # in a worker thread: the event loop keeps stepping other streams.
            try:
                body = await limits.read_body(request.stream(), self.options["max_body_bytes"],
                                              self.options["body_timeout"],
                                              request.headers.get("content-length"))
            except limits.BodyError as error:
                self.metrics.error("oversize" if error.status == 413 else "bad_request")
                self.trimmer.soon()
                return _error(error.status, str(error))
            events, bad = await asyncio.to_thread(_read_lines_body, body,
                                                  self.runtime.input_size)
            del body
            if bad:
                self.metrics.error("bad_request")
                return _error(400, bad)
            self._start()
            session = Session(self.table)
            try:
                session.row("")  # allocates now: --max-streams is said as a 503
            except ValueError as error:
                session.close()
                self.metrics.error("limit")
                return _error(503, str(error))
            done = False
        finally:
            if done:
                self.requests -= 1

        async def lines():
            try:
                for event in events:
                    if isinstance(event, Vector):
                        row = session.rows[""]
                        session.touch(row)
                        out, = await self.ticks.submit([(row, event.values)])
                        if isinstance(out, Exception):
                            yield protocol.bare_reply(error=str(out)) + "\n"
                        else:
                            yield frames_json(out) + "\n"
                    elif isinstance(event, Reset):
                        self.table.reset(session.rows[""])
                        yield "\n"
            finally:
                session.close()
                self.requests -= 1

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # ------------------------------------------------------------------ #
    # WebSocket.
    # ------------------------------------------------------------------ #
    @api.websocket(protocol.PATH)
    async def streams(self, websocket: WebSocket):
        headers = websocket.headers
        offered = origins_lib.offered_subprotocols(headers)
        if not self.origins.allowed(headers):
            self.metrics.error("origin")
            await websocket.close(code=1008)
            return
        if not self._authorized(headers, offered):
            self.metrics.error("auth")
            await websocket.close(code=1008)  # before accept: the handshake is refused (403)
            return
        if self.draining:
            await websocket.close(code=1001)
            return
        client = websocket.client
        address = client.host if client else None
        wait = self.backoff.left(address)
        if wait:  # refused before the handshake: not one message is read
            self.metrics.error("limit")
            await self._refuse_backoff(websocket, wait)
            return
        await websocket.accept(subprotocol=origins_lib.accepted_subprotocol(offered))
        if self._at_cap():  # said at once, never queued
            self.metrics.error("limit")
            await websocket.close(code=1013, reason=_reason(self._cap_message()))
            return
        self._start()
        options = self.options
        session = Session(self.table, max_streams=options["max_streams_per_connection"])
        queue = limits.MessageQueue(options["max_queued_messages"])
        busy = [False]
        drain = asyncio.Event()
        self.connections.add(drain)
        peer = f"{client.host}:{client.port}" if client else "?"
        logger.info("connection opened from %s (%d open)", peer, len(self.connections))
        messages, code = 0, None
        opened = time.monotonic()
        limit = options["max_message_bytes"]
        idle = options["connection_timeout"]
        reader = limits.ConnectionReader(websocket.receive, idle,
                                         busy=lambda: bool(len(queue) or busy[0]))
        drained = asyncio.ensure_future(drain.wait())
        drained.add_done_callback(reader.wake)
        worker = asyncio.ensure_future(self._answer(websocket, session, queue, busy))
        worker.add_done_callback(reader.wake)
        try:
            while True:
                # None: woken by the worker's end, a drain or --connection-timeout.
                message = (None if drained.done() or worker.done()
                           else await reader.receive())
                if worker.done():  # it could not send: the peer went away
                    break
                if message is None and reader.idle:
                    code = 1001
                    await websocket.close(code=1001, reason=_reason(
                        f"no message for {idle:g} s (--connection-timeout)"))
                    break
                if message is None:  # draining, between messages
                    await self._settle(queue, busy)
                    code = 1001
                    await websocket.close(code=1001, reason="server shutting down")
                    break
                received = time.perf_counter()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code")
                    break
                text = message.get("text")
                if text is None:
                    text = message.get("bytes") or b""
                if len(text) > limit or (len(text) * 4 > limit and isinstance(text, str)
                                         and len(text.encode("utf-8")) > limit):
                    code = 1009
                    self.metrics.error("oversize")
                    self.trimmer.soon()
                    await websocket.close(code=1009, reason=f"message over {limit} bytes")
                    break
                try:
                    queue.put((text, received))
                except limits.QueueFull as error:
                    code = 1013
                    self.backoff.punish(address)
                    self.metrics.error("limit")
                    self.trimmer.soon()
                    await websocket.close(code=1013, reason=_reason(str(error)))
                    break
                messages += 1
        except WebSocketDisconnect as error:
            code = error.code
        except (asyncio.CancelledError, RuntimeError, OSError):  # the peer went away
            pass
        finally:
            reader.close()
            drained.cancel()
            worker.cancel()
            dropped = queue.clear()  # the backlog of a closed connection never runs
            session.close()
            self.connections.discard(drain)
            logger.info("connection closed from %s after %d messages in %.3f s (code %s, %d "
                        "dropped unanswered, %d open)", peer, messages,
                        time.monotonic() - opened, code, dropped, len(self.connections))

    async def _refuse_backoff(self, websocket, wait):
        """Refuses a handshake from an address in its `--abuse-backoff`: HTTP
        429 with `Retry-After` (403 where the server cannot send a response)."""
        message = (f"a connection from this address was closed for too many unanswered "
                   f"messages; new connections are refused for {wait:.1f} s more "
                   "(--abuse-backoff)")
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            response = JSONResponse({"error": message}, status_code=429,
                                    headers={"Retry-After": str(max(1, math.ceil(wait)))})
            try:
                await websocket.send_denial_response(response)
                return
            except RuntimeError:
                pass
        await websocket.close(code=1008, reason=_reason(message))

    async def _answer(self, websocket, session, queue, busy):
        """A connection's worker: answers its queued messages, in order."""
        options = self.options
        while True:
            text, received = await queue.get()
            busy[0] = True
            try:
                parsed = protocol.parse_message(text, options["max_requests_per_message"])
            except protocol.ProtocolError as error:
                reply = protocol.reply([protocol.error_item(None, error)])
                items = [("error", None, str(error))]
            else:
                items = await session.handle(parsed, self.ticks.submit)
                reply = (format_bare(items) if parsed.bare
                         else format_items(items, options["max_reply_bytes"]))
            await websocket.send_text(reply)
            self.metrics.message(time.perf_counter() - received, items)
            busy[0] = False

    @staticmethod
    async def _settle(queue, busy, timeout=4.0):
        """Waits (bounded) until a draining connection's received messages are answered."""
        deadline = time.monotonic() + timeout
        while (len(queue) or busy[0]) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def __del__(self):
        executor = getattr(self, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False)


def build_app(model_path, *, replicas=1, max_batch_size=1024, batch_wait_ms=0.0,
              max_streams=100_000, idle_timeout=None, token=None,
              max_message_bytes=MAX_MESSAGE_BYTES, model_info=None, control=None,
              replica_cpus=0.0, allow_origins=(), playground=True, metrics=True, **bounds):
    """The bound Serve application for `serve.run`.

    Args:
        model_path: a `.keras` model or a `.tflite` export (read here, sent
            to the replicas as bytes).
        replicas: number of replicas.
        max_batch_size: the most rows of one step (1: batching off).
        batch_wait_ms: how long a tick waits for more steps.
        max_streams: open streams per replica.
        idle_timeout: seconds after which an idle stream is dropped
            (`None`: never).
        token: the bearer token, or `None` (no auth).
        max_message_bytes: the largest WebSocket message (close 1009 above).
        model_info: the dict `GET /v1/model` answers (`None`: from the
            runtime).
        control: the name of a `Control` actor (namespace `"streamgen"`)
            that can drain the replicas, or `None`.
        replica_cpus: CPUs each replica reserves (0: schedule freely).
        allow_origins: origins (`"https://host[:port]"`, or `"*"`) whose
            browser pages may use the server besides its own; a request
            without `Origin` (a program) is always allowed.
        playground: serve the playground page at `GET /`.
        metrics: count the Prometheus metrics (`GET /metrics`, and Ray's
            export); `False` only to measure what they cost.
        **bounds: the service's bounds (defaults in `streamgen.serve.limits`):
            `max_connections` (per replica; beyond, close 1013 or HTTP 503
            at once), `max_streams_per_connection`, `max_queued_messages`
            (unanswered messages of a connection; beyond, close 1013),
            `connection_timeout` (seconds without a message; then close
            1001), `max_requests_per_message`, `max_reply_bytes`,
            `max_body_bytes` (413 beyond), `body_timeout` (seconds for a
            request body; 408 after), `abuse_backoff` (seconds during
            which a client address whose connection was closed with 1013
            for unanswered messages is refused new connections, HTTP 429;
            doubled per repeat up to 60 s; 0: never).

    Returns:
        A `ray.serve.Application`.
    """
    unknown = sorted(set(bounds) - set(_LIMIT_DEFAULTS))
    if unknown:
        raise TypeError(f"build_app() got unexpected keyword arguments {unknown}")
    origins_lib.Origins(allow_origins)  # a bad entry: ValueError here, not in a replica
    with open(model_path, "rb") as file:
        model_bytes = file.read()
    options = dict(max_batch_size=int(max_batch_size), batch_wait_ms=float(batch_wait_ms),
                   max_streams=int(max_streams), idle_timeout=idle_timeout, token=token,
                   max_message_bytes=int(max_message_bytes), model_info=model_info,
                   control=control, allow_origins=list(allow_origins or ()),
                   playground=bool(playground), metrics=bool(metrics),
                   **dict(_LIMIT_DEFAULTS, **bounds))
    ongoing = int(options["max_connections"]) + limits.CONNECTION_HEADROOM
    deployment = Server.options(num_replicas=int(replicas), max_ongoing_requests=ongoing,
                                ray_actor_options={"num_cpus": replica_cpus})
    return deployment.bind(os.path.basename(str(model_path)), model_bytes, options)

