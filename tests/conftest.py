"""Shared fixtures, and the run's set-up: xdist workers and groups, the LiteRT export cache."""

import os
import shutil
import sys
import tempfile

# Under pytest-xdist (pyproject.toml's `-n auto`) each worker takes its share
# of the cores: TensorFlow's thread pools sized to it, not to the machine, keep
# the workers' threads from crowding each other (not-slow tests, 2 workers on
# 2 cores: 372 s against 401 s). Set before the test modules import TensorFlow.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _SHARE)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", _SHARE)

import numpy as np
import pytest

# Nothing here imports TensorFlow (`import streamgen` does not): xdist's main
# process, which only hands out the tests, loads this module too, before it
# starts the workers. The test modules import it, in the workers.
import streamgen as sg

from helpers import (CELLS, EXPORT_CACHE_ENV, MODES, Exports, export_litert, make_model,
                     sampling_models as _sampling_models)


@pytest.fixture(scope="session")
def core_models():
    """One tiny model per (cell, decoder_state)."""
    return {(c, m): make_model(c, m) for c in CELLS for m in MODES}


@pytest.fixture(scope="session")
def core_inputs():
    """Inputs `(4, 12, 3)`, seeded."""
    return np.random.default_rng(0).normal(size=(4, 12, 3)).astype(np.float32)


# ---------------------------------------------------------------------- #
# CLI fixtures (tests/cli/).
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="session")
def cli_model_path(tmp_path_factory):
    """A tiny saved model for the CLI tests: input_size 3, output_size 2.

    Its stop head is sharpened (see `make_model`) so that lengths vary
    between 0 and 9 and do not flip on float noise.
    """
    path = tmp_path_factory.mktemp("cli_model") / "tiny.keras"
    make_model(seed=3, stop_scale=8.0).save(path)
    return str(path)


@pytest.fixture(scope="session")
def cli_model(cli_model_path):
    """`cli_model_path`, loaded: the reference the CLI's output is checked against."""
    import keras

    model = keras.models.load_model(cli_model_path, compile=False)
    _LOADED[_file_key(cli_model_path)] = model  # the commands' too: one trace
    return model


@pytest.fixture(scope="session")
def cli_tflite(cli_model_path, tmp_path_factory):
    """`cli_model_path` exported by `streamgen export --format litert`."""
    from click.testing import CliRunner

    from streamgen.cli.main import cli

    pytest.importorskip("ai_edge_litert")
    path = str(tmp_path_factory.mktemp("cli_lite") / "tiny.tflite")
    result = CliRunner().invoke(cli, ["export", "--model", cli_model_path, "-o", path],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {path} ({os.path.getsize(path):,} bytes)\n"
    return path


_LOADED = {}  # `_file_key(path)` -> model, for `cli_models_loaded_once`


def _file_key(path):
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


@pytest.fixture(autouse=True)
def cli_models_loaded_once(request, monkeypatch):
    """In tests/cli/: `sg.load_model` of a file loaded before (the same path,
    size and modification time) and `sg.load_default()` give the model
    loaded then.

    The commands are invoked in-process (`CliRunner`) hundreds of times, and
    each invocation would load the file and trace its step again (~0.6 s);
    the commands never change a model they load. Loading itself is tested in
    tests/test_model.py, and tests/cli/test_subprocess.py runs the real
    process. Tests marked `fresh_models` (they count loads and traces) load
    anew.
    """
    if request.node.path.parent.name != "cli" or request.node.get_closest_marker("fresh_models"):
        return

    def load_model(path):
        try:
            key = _file_key(path)
        except OSError:
            return original_load(path)  # its own error
        if key not in _LOADED:
            _LOADED[key] = original_load(path)
        return _LOADED[key]

    original_load = sg.load_model
    monkeypatch.setattr(sg, "load_model", load_model)
    monkeypatch.setattr(sg, "load_default", lambda: load_model(sg.default_model_path()))


# pytest-xdist (`-n auto --dist loadgroup`, pyproject.toml): at most four
# workers, and what must share one process kept in one group. `-n 0` runs the
# suite in one process (`--pdb` does so by itself).
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core, at most MAX_WORKERS (each holds its own
    session fixtures: trained models, exports)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Each test module runs in one worker (`xdist_group`), so that its module
    fixtures (exports, trained models) are built once. Ray tests all run in one
    worker: they share the session's one cluster (`ray_cluster`) and start Ray
    processes of their own, and two Ray starts at once can miss Ray's 30 s
    raylet registration wait. test_benchmarks.py, which starts Ray clusters
    too, is in that group.
    """
    phases = {}  # Ray tests' module -> its phase (_ray_phase), the latest of its tests'
    for item in items:
        uses_ray = (item.get_closest_marker("ray") or "ray_cluster" in item.fixturenames
                    or item.path.name == "test_benchmarks.py")
        group = "ray" if uses_ray else item.path.relative_to(config.rootpath).as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
        if uses_ray:
            phases[item.path] = max(phases.get(item.path, 0), _ray_phase(item))
    # A stable sort: each module's tests stay together and in their order.
    items.sort(key=lambda item: phases.get(item.path, -1))


def _ray_phase(item):
    """The Ray tests run in three phases: 0, the benchmark scripts (their own
    clusters, in subprocesses; the session's cluster not started yet); 1, Ray
    Data and Ray Train on the session's cluster; 2, Serve, last: its
    controller, proxy and replicas poll while idle (~10 CPU-s a minute with
    one application, ~1 more per replica), so they live through these tests
    only."""
    if item.path.name == "test_benchmarks.py":
        return 0
    serving = "serve_port" in item.fixturenames or "serve" in item.path.name
    return 2 if serving else 1


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session):
    """Where tests are collected and run (each xdist worker, or the one
    process): Hypothesis' profile. Not in xdist's main process, which collects
    nothing: importing Hypothesis takes ~2 s there, before any worker starts."""
    if session.config.pluginmanager.hasplugin("dsession"):
        return
    from hypothesis import settings

    settings.register_profile("streamgen", deadline=None, max_examples=25, derandomize=True)
    settings.load_profile("streamgen")


def pytest_configure(config):
    """In the main process: the run's LiteRT export cache (`helpers.export_litert`),
    a folder that the xdist workers (started later) find in their environment."""
    if not hasattr(config, "workerinput") and EXPORT_CACHE_ENV not in os.environ:
        os.environ[EXPORT_CACHE_ENV] = tempfile.mkdtemp(prefix="streamgen-test-exports-")
        _OWN_CACHE.append(os.environ[EXPORT_CACHE_ENV])


_OWN_CACHE = []  # the export cache this process made, removed at the end
_EXIT_STATUS = []  # pytest's, for `pytest_unconfigure` (below)


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))
    for folder in _OWN_CACHE:  # after the workers' end, in the main process
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After a session that imported Ray: exit at once, with pytest's status.

    `ray.shutdown()` leaves the driver's C++ threads running (`gcs_client_io_service`,
    `worker.io`, gRPC's); the interpreter's own exit then destroys what they use
    and, now and then, crashes (SIGSEGV after "1089 passed", CI on 2026-11-30).
    Everything pytest reports is written by now; only that exit is skipped.
    """
    if "ray" in sys.modules and _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's one local Ray cluster (2 CPUs, 127.0.0.1), shut down at the end.

    Every Ray test (Serve, Data) uses this one: Ray allows one `ray.init`
    per process. If Ray is already initialized, that cluster is used as it is.
    """
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        # On a loaded machine the raylet can miss Ray's registration wait
        # (30 s, fixed in ray/_private/node.py): try once more.
        for attempt in (1, 2):
            try:
                ray.init(address="local", num_cpus=2, include_dashboard=False,
                         log_to_driver=False, configure_logging=False, logging_level="ERROR",
                         _node_ip_address="127.0.0.1")
                break
            except Exception:  # noqa: BLE001  (Ray raises several kinds on a failed start)
                ray.shutdown()
                if attempt == 2:
                    raise
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_port(ray_cluster):
    """Ray Serve's HTTP proxy on 127.0.0.1 (one per session); shut down at the end.

    Every Serve test module deploys its applications on it (under its own
    route prefixes): Serve has one proxy per cluster.
    """
    import socket

    serve = pytest.importorskip("ray.serve")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()


WEB_TOKEN = "t0ken-for.browsers"
WEB_ALLOWED_ORIGIN = "http://allowed.example:8080"


@pytest.fixture(scope="session")
def web_serve(serve_port, cli_tflite):
    """Two applications of the LiteRT export on the session's Serve, for the
    browser-facing tests: `/web` (no token, 8 streams, 16 KiB messages) and
    `/webtok` (`WEB_TOKEN`; `WEB_ALLOWED_ORIGIN` allowed too)."""
    serve = pytest.importorskip("ray.serve")
    from streamgen.serve.app import build_app

    port = serve_port
    serve.run(build_app(cli_tflite, max_streams=8, max_message_bytes=1 << 14),
              name="web", route_prefix="/web")
    serve.run(build_app(cli_tflite, token=WEB_TOKEN, allow_origins=[WEB_ALLOWED_ORIGIN]),
              name="webtok", route_prefix="/webtok")
    base = f"127.0.0.1:{port}"
    yield {"port": port, "self": f"http://{base}", "web": f"http://{base}/web",
           "webtok": f"http://{base}/webtok", "ws": f"ws://{base}/web",
           "wstok": f"ws://{base}/webtok"}
    # Left to `serve_port`'s `serve.shutdown()` at the session's end, which
    # ends every application at once (`serve.delete` waits ~3 s for each).


# The CLI sampling tests' tiny mdn model, saved and exported.
@pytest.fixture(scope="session")
def cli_mdn_path(tmp_path_factory):
    """A tiny saved mdn model (3 mixtures): input_size 3, output_size 2.

    Its stop head is only mildly sharpened, so that `--stop sample` draws
    lengths that vary with the seed.
    """
    path = tmp_path_factory.mktemp("cli_mdn") / "mdn.keras"
    make_model("gru", "reset", seed=6, stop_scale=3.0, frame_loss="mdn", mixtures=3).save(path)
    return str(path)


@pytest.fixture(scope="session")
def cli_mdn_tflite(cli_mdn_path, tmp_path_factory):
    """`cli_mdn_path` exported to LiteRT."""
    pytest.importorskip("ai_edge_litert")
    import streamgen as sg

    path = str(tmp_path_factory.mktemp("cli_mdn_lite") / "mdn.tflite")
    export_litert(sg.load_model(cli_mdn_path), path)
    return path


@pytest.fixture(scope="session")
def sampling_models():
    """`helpers.sampling_models()`, built once for the sampling tests."""
    return _sampling_models()


@pytest.fixture(scope="session")
def sampling_lite_paths(sampling_models, tmp_path_factory):
    """Each of `sampling_models` exported to LiteRT, once."""
    pytest.importorskip("ai_edge_litert")
    return Exports(sampling_models, tmp_path_factory.mktemp("sampling"))

