"""`streamgen serve` and `streamgen stream --url`.

The server runs as a real subprocess joining a cluster started with
`ray start --head --block` on 127.0.0.1 (1 CPU); that `ray start` process
is ours and is stopped by its pid at the end (not `ray stop`, which would
end every Ray cluster of this user on the machine).
"""

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
from click.testing import CliRunner

from streamgen.cli.main import cli

pytest.importorskip("ray")
# A real `ray start` cluster and `streamgen serve` subprocesses.
pytestmark = [pytest.mark.slow, pytest.mark.ray]
websockets = pytest.importorskip("websockets")

INPUT = b"# two sequences\n0.5 0 0.1\n1, 1, -0.5\n\n[0.2, 0.1, 0.9]\n-1 0.3 0.3\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # set by a driver in this process (tests/test_serve_app.py)
    # Ray 2.5x turns on token auth for `ray start` when ~/.ray/auth_token
    # exists, while a driver given an explicit address does not send it:
    # the same mode on both sides.
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def ray_address_file():
    """The file where `ray start` leaves its cluster's address (Ray's temp folder)."""
    return os.path.join(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray",
                        "ray_current_cluster")


@contextlib.contextmanager
def ray_address_file_kept():
    """Puts back the address file as it was before `ray start` wrote it.

    Once our `ray start` has stopped, its file points to a dead cluster, and
    Ray reads it wherever no address is given: in a later test, Ray Train's
    placement group cleaner queried it for 40 s at a time, and every later
    training run waited 12 s for the cleaner to stop.
    """
    path = ray_address_file()
    try:
        with open(path, "rb") as f:
            before = f.read()
    except FileNotFoundError:
        before = None
    try:
        yield
    finally:
        if before is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            with open(path, "wb") as f:
                f.write(before)


@pytest.fixture(scope="module")
def server(cli_tflite):
    with ray_address_file_kept():
        yield from serving(cli_tflite)


def serving(cli_tflite):
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    streamgen_bin = os.path.join(os.path.dirname(sys.executable), "streamgen")
    if not os.path.exists(ray_bin) or not shutil.which(streamgen_bin):
        pytest.skip("ray / streamgen scripts not installed")
    gcs, port = free_port(), free_port()
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=1",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
        start_new_session=True)
    process = None
    try:
        process = subprocess.Popen(
            [streamgen_bin, "serve", "--model", cli_tflite, "--address", f"127.0.0.1:{gcs}",
             "--port", str(port), "--token", "tok"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
        ready, _, _ = select.select([process.stdout], [], [], 150)
        line = process.stdout.readline().decode() if ready else ""
        url = f"ws://127.0.0.1:{port}"
        assert line == f"serving {cli_tflite} at {url}/v1/streams (1 replica; Ctrl-C to stop)\n", (
            line, process.stderr.read1(4096) if not ready else "")
        yield {"url": url, "process": process}
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            # ... gracefully, one process after the other: ~30 s. Its own
            # session (start_new_session) is everything it started.
            head.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)


def local_and_remote(runner, server, cli_tflite, options):
    """`stream` with `options` on the model and through the server (both succeed)."""
    local = runner.invoke(cli, ["stream", "--model", cli_tflite, *options], input=INPUT)
    remote = runner.invoke(cli, ["stream", "--url", server["url"], "--token", "tok", *options],
                           input=INPUT)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    return local, remote


@pytest.mark.parametrize("options", [[], ["--stop", "head", "--threshold", "0.7",
                                          "--max-steps", "3"]])
def test_stream_url_is_byte_identical(server, cli_tflite, options):
    runner = CliRunner()
    local, remote = local_and_remote(runner, server, cli_tflite, options)
    assert remote.stdout == local.stdout
    assert local.stdout.count("\n") == 5


def test_stream_url_samples_as_locally(server, cli_tflite):
    """The sampler and the seed travel to the server: the same draws as locally;
    the server's frame kind is checked before."""
    options = ["--sampler", "greedy", "--stop", "sample", "--threshold", "5", "--seed", "7"]
    runner = CliRunner()
    local, remote = local_and_remote(runner, server, cli_tflite, options)
    assert remote.stdout == local.stdout
    other = runner.invoke(cli, ["stream", "--url", server["url"], "--token", "tok",
                                *options[:-1], "8"], input=INPUT)
    assert other.stdout != local.stdout
    # A sampler that the server's (mse) model cannot take: a usage error here.
    refused = runner.invoke(cli, ["stream", "--url", server["url"], "--token", "tok",
                                  "--sampler", "random"], input=INPUT)
    assert refused.exit_code == 2 and refused.stderr.endswith(
        "Error: Invalid value for '--sampler': random cannot draw this model's 'mse' frames "
        "(frame_loss=mse): only greedy decodes them; sample a model trained with "
        "--frame-loss mdn or categorical.\n")


def test_stream_url_errors(server):
    runner = CliRunner()
    result = runner.invoke(cli, ["stream", "--url", server["url"]], input=INPUT)
    assert result.exit_code == 1
    assert "the server needs a token" in result.stderr
    result = runner.invoke(cli, ["stream", "--url", server["url"], "--token", "tok",
                                 "--model", "x.keras"], input=INPUT)
    assert result.exit_code == 2
    result = runner.invoke(cli, ["stream", "--url", server["url"], "--token", "tok"],
                           input=b"0.5 0 0.1\n1 2\n")
    assert result.exit_code == 1
    assert result.stderr == "streamgen: error: <stdin>:2: expected 3 numbers, got 2\n"


def test_sigterm_answers_then_closes_with_1001(server):
    import asyncio

    from websockets.asyncio.client import connect

    async def main():
        async with connect(server["url"] + "/v1/streams",
                           additional_headers={"Authorization": "Bearer tok"}) as ws:
            await ws.send(json.dumps([{"id": "a", "x": [0.5, 0, 0.1]}]))
            assert "out" in json.loads(await ws.recv())[0]
            server["process"].send_signal(signal.SIGTERM)
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 30)
            return info.value.rcvd.code

    assert asyncio.run(main()) == 1001
    process = server["process"]
    assert process.wait(60) == 0
    assert process.stderr.read().decode() == "streamgen: stopped\n"


def test_serve_help_and_port_in_use():
    result = CliRunner().invoke(cli, ["serve", "-h"])
    assert result.exit_code == 0 and "--max-batch-size" in result.stdout
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port), "--model", "nope.keras"])
        assert result.exit_code == 2  # --model must exist (checked first)
