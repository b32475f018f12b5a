"""`sg.LiteStream` (LiteRT, no TensorFlow) == `sg.Stream` (TensorFlow)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import streamgen as sg
from helpers import CELLS, MODES, Exports, export_litert, make_model

STEPS = 200  # "long streams": every state path is exercised many times


@pytest.fixture(scope="module")
def exports(core_models, tmp_path_factory):
    """`(cell, mode) -> path` of each core model's LiteRT export."""
    return Exports(core_models, tmp_path_factory.mktemp("litert"), name="_".join)


@pytest.fixture(scope="module")
def while_exports(core_models, tmp_path_factory):
    """`(cell, mode) -> path`, exported with the `WHILE` inner loop that
    models above `UNROLL_MAX_STEPS` get (forced here on the tiny models)."""
    from streamgen.runtimes import tf as tf_runtime

    def export_while(model, path):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tf_runtime, "UNROLL_MAX_STEPS", 0)
            assert export_litert(model, path)["inner_loop"] == "while"

    return Exports(core_models, tmp_path_factory.mktemp("litert_while"), name="_".join,
                   export=export_while)


@pytest.fixture(scope="module")
def long_inputs():
    """`(STEPS, 3, 3)`: 200 steps of 3 rows, seeded."""
    return np.random.default_rng(5).normal(size=(STEPS, 3, 3)).astype(np.float32)


def assert_same(got, expected, where):
    got = got if isinstance(got, list) else [got]
    expected = expected if isinstance(expected, list) else [expected]
    assert len(got) == len(expected)
    for row, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f"{where}, row {row}: {a.shape} != {b.shape}"
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{where}, row {row}")


# One variant in the quick run (`-m "not slow"`); the other seven each take
# a LiteRT conversion and 400 steps on both runtimes.
LONG_STREAM_VARIANTS = [
    pytest.param(mode, cell, loop, id=f"{mode}-{cell}-{loop}",
                 marks=() if (mode, cell, loop) == ("reset", "gru", "unrolled")
                 else pytest.mark.slow)
    for mode in MODES for cell in CELLS for loop in ("unrolled", "while")]


@pytest.mark.parametrize("mode, cell, loop", LONG_STREAM_VARIANTS)
def test_lite_equals_stream_over_long_streams(core_models, exports, while_exports, long_inputs,
                                              cell, mode, loop):
    model = core_models[(cell, mode)]
    path = (exports if loop == "unrolled" else while_exports)[(cell, mode)]
    lengths = []
    # Batch 1 (1-D inputs) and batch 3, each over all 200 steps.
    for x in (long_inputs[:, 0], long_inputs):
        tf_stream, lite_stream = model.open_stream(seed=4), sg.LiteStream(path, seed=4)
        for t in range(STEPS):
            expected, got = tf_stream.step(x[t]), lite_stream.step(x[t])
            assert_same(got, expected, f"step {t}, batch {lite_stream.batch_size}")
            lengths += [len(o) for o in (expected if isinstance(expected, list) else [expected])]
        for a, b in zip(lite_stream.get_state().values(), tf_stream.get_state().values()):
            for u, v in zip(a, b):
                np.testing.assert_allclose(u, v, atol=1e-5)
    assert len(set(lengths)) >= 4, f"needs varied lengths to mean anything: {set(lengths)}"


def test_xla_stream_equals_stream(core_models, long_inputs):
    """The third runtime on the same outer step: `jit_compile=True`."""
    model = core_models[("lstm", "carry")]
    plain, xla = model.open_stream(), model.open_stream(jit_compile=True)
    for t in range(60):
        assert_same(xla.step(long_inputs[t]), plain.step(long_inputs[t]), f"step {t}")


@pytest.mark.parametrize("mode", MODES)
def test_get_state_set_state_resume_and_cross_runtime(core_models, exports, long_inputs, mode):
    model = core_models[("lstm", mode)]
    x = long_inputs[:40]
    s = sg.LiteStream(exports[("lstm", mode)])
    for t in range(20):
        s.step(x[t])
    saved = s.get_state()
    assert [a.shape for a in saved["outer"]] == [(3, 8), (3, 8)]
    uninterrupted = [s.step(x[t]) for t in range(20, 40)]

    # Restored into a LiteStream with other history: resumes exactly.
    other = sg.LiteStream(exports[("lstm", mode)])
    other.step(x[0, :1] * 3.0)
    other.set_state(saved)
    assert other.batch_size == 3
    for t, expected in zip(range(20, 40), uninterrupted):
        got = other.step(x[t])
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)

    # States move between the runtimes: a TF stream resumes a Lite state.
    tf_stream = model.open_stream()
    tf_stream.set_state(saved)
    for t, expected in zip(range(20, 40), uninterrupted):
        assert_same(tf_stream.step(x[t]), expected, f"step {t}")


def test_get_state_returns_copies_and_reset(exports, long_inputs):
    s = sg.LiteStream(exports[("gru", "carry")])
    assert s.batch_size is None
    assert [a.shape for a in s.get_state()["outer"]] == [(1, 8)]
    first = [s.step(x) for x in long_inputs[:6, 0]]
    state = s.get_state()
    state["outer"][0][:] = 123.0
    assert not np.any(s.get_state()["outer"][0] == 123.0)
    s.reset()
    assert s.batch_size is None
    again = [s.step(x) for x in long_inputs[:6, 0]]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    s.reset()
    assert len(s.step(long_inputs[0])) == 3  # the batch size is free again
    assert s.batch_size == 3


@pytest.mark.parametrize("loop", ["unrolled", "while"])
@pytest.mark.parametrize("mode", MODES)
def test_decode_mask_matches_stream(core_models, exports, while_exports, long_inputs, mode, loop):
    model = core_models[("gru", mode)]
    path = (exports if loop == "unrolled" else while_exports)[("gru", mode)]
    tf_stream, lite_stream = model.open_stream(), sg.LiteStream(path)
    masks = [True, [True, False, True], False, [False, True, True], True]
    for t in range(25):
        decode = masks[t % len(masks)]
        expected = tf_stream.step(long_inputs[t], generate=decode)
        got = lite_stream.step(long_inputs[t], generate=decode)
        assert_same(got, expected, f"step {t}, generate={decode}")
        if decode is False:
            assert all(len(o) == 0 for o in got)


def test_feed_is_lazy_and_equal(core_models, exports, long_inputs):
    model = core_models[("simple_rnn", "reset")]
    consumed = []

    def inputs():
        for t in range(5):
            consumed.append(t)
            yield long_inputs[t, 0]

    generator = sg.LiteStream(exports[("simple_rnn", "reset")]).feed(inputs())
    first = next(generator)
    assert consumed == [0]
    rest = list(generator)
    assert consumed == [0, 1, 2, 3, 4]
    for t, (got, expected) in enumerate(zip([first] + rest, model.stream(long_inputs[:5, 0]))):
        assert_same(got, expected, f"step {t}")


def test_stop_thresholds_override_without_reexport(core_models, exports, long_inputs):
    model = core_models[("gru", "reset")]
    path = exports[("gru", "reset")]  # exported with StopHead(0.5)
    cases = [  # (LiteStream's stop=, the same for Stream)
        ([sg.StopHead(0.9)], [sg.StopHead(0.9)]),
        (sg.StopHead(0.1), sg.StopHead(0.1)),
        ([{"class_name": "StopHead", "config": {"threshold": 0.9}}], [sg.StopHead(0.9)]),
    ]
    totals = {}
    for lite_stop, tf_stop in cases:
        tf_stream, lite_stream = model.open_stream(stop=tf_stop), sg.LiteStream(path, stop=lite_stop)
        total = 0
        for t in range(30):
            got = lite_stream.step(long_inputs[t])
            assert_same(got, tf_stream.step(long_inputs[t]), f"stop={lite_stop!r}, step {t}")
            total += sum(len(o) for o in got)
        totals[repr(tf_stop)] = total
    default = sg.LiteStream(path)
    default_total = sum(len(o) for x in long_inputs[:30] for o in default.step(x))
    assert totals["[StopHead(threshold=0.9)]"] > default_total > totals["StopHead(threshold=0.1)"]


def test_stop_override_of_any_built_in_kind_without_reexport(core_models, exports,
                                                             long_inputs):
    model = core_models[("gru", "reset")]
    path = exports[("gru", "reset")]  # exported with the model's [StopHead(0.5)]
    for stop in ([sg.L2Norm(1.0)], [sg.StopHead(0.5), sg.L2Norm(1.0)], [],
                 [sg.L2Norm(0.3, "below"), sg.L2Norm(2.0)]):
        lite_stream, tf_stream = sg.LiteStream(path, stop=stop), model.open_stream(stop=stop)
        for t in range(20):
            assert_same(lite_stream.step(long_inputs[t]), tf_stream.step(long_inputs[t]),
                        f"stop={stop!r}, step {t}")
    s = sg.LiteStream(path, stop=[sg.StopHead(0.7), sg.L2Norm(0.5, "below")])
    assert [c["config"]["threshold"] for c in s.criteria] == [0.7, 0.5]
    assert s.runtime.thresholds.tolist() == [np.float32(0.7), np.inf, 0.5, np.inf]


def test_stop_override_errors(exports):
    path = exports[("gru", "reset")]
    with pytest.raises(TypeError, match=r"expected a stop criterion .* got 0.5"):
        sg.LiteStream(path, stop=0.5)
    with pytest.raises(TypeError, match=r"invalid element in argument `stop`.* got 'head'"):
        sg.LiteStream(path, stop=["head"])
    bad = {"class_name": "StopHead", "config": {"threshold": 1.5}}
    with pytest.raises(ValueError, match=r"`threshold` of StopHead, expected a probability in \[0, 1\], got 1.5"):
        sg.LiteStream(path, stop=[bad])
    bad = {"class_name": "StopHead", "config": {"threshold": "high"}}
    with pytest.raises(ValueError, match=r"`threshold` of StopHead, expected a number, got 'high'"):
        sg.LiteStream(path, stop=[bad])


@pytest.mark.parametrize("loop", ["unrolled", "while"])
def test_lower_cap(core_models, exports, while_exports, long_inputs, loop):
    model = core_models[("lstm", "reset")]
    tf_stream = model.open_stream(max_steps=3)
    path = (exports if loop == "unrolled" else while_exports)[("lstm", "reset")]
    lite_stream = sg.LiteStream(path, max_steps=3)
    assert lite_stream.max_steps == 3
    for t in range(30):
        got = lite_stream.step(long_inputs[t])
        assert_same(got, tf_stream.step(long_inputs[t]), f"step {t}")
        assert max(len(o) for o in got) <= 3
    for bad in (10, 0, 2.5, True):
        with pytest.raises(ValueError) as lite_error:
            sg.LiteStream(exports[("lstm", "reset")], max_steps=bad)
        with pytest.raises(ValueError) as tf_error:
            model.open_stream(max_steps=bad)
        assert str(lite_error.value) == str(tf_error.value)


@pytest.mark.parametrize("x", [
    np.zeros(4),  # wrong width
    np.zeros((1, 1, 3)),  # wrong rank
    np.array([0.0, np.nan, 1.0]),  # non-finite
    np.array([[0.0, 1.0, np.inf]]),
    ["a", "b", "c"],  # not numbers
])
def test_input_errors_match_stream(core_models, exports, x):
    tf_stream = core_models[("gru", "reset")].open_stream()
    lite_stream = sg.LiteStream(exports[("gru", "reset")])
    with pytest.raises(ValueError) as tf_error:
        tf_stream.step(x)
    with pytest.raises(ValueError) as lite_error:
        lite_stream.step(x)
    assert str(lite_error.value) == str(tf_error.value)


def test_batch_and_state_errors_match_stream(core_models, exports):
    streams = [core_models[("lstm", "reset")].open_stream(),
               sg.LiteStream(exports[("lstm", "reset")])]
    messages = []
    for s in streams:
        s.step(np.zeros((2, 3)))
        found = []
        with pytest.raises(ValueError, match="batch of 3 rows, but this stream carries state for 2") as e:
            s.step(np.zeros((3, 3)))
        found.append(str(e.value))
        bad_states = [[np.zeros((1, 8))], {"outer": [np.zeros((1, 8))], "inner": []}]
        state = s.get_state()
        state["inner"][1] = np.zeros((2, 7))
        bad_states.append(state)
        for bad in bad_states:
            with pytest.raises(ValueError) as e:
                s.set_state(bad)
            found.append(str(e.value))
        messages.append(found)
    assert messages[0] == messages[1]
    assert "state['inner'][1] must have shape (2, 8), got (2, 7)" in messages[1][-1]


def test_not_a_streamgen_export(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(sg.NotAnExportError, match=r"junk.tflite: not a streamgen LiteRT export"):
        sg.LiteStream(str(junk))


@pytest.mark.slow
def test_lite_does_not_import_tensorflow(exports, tmp_path):
    """In a fresh interpreter: import, load, step, state, feed — no TF, quiet."""
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import streamgen.runtimes.lite
        import streamgen as sg
        s = sg.LiteStream({exports[("lstm", "carry")]!r},
                          stop=[{{"class_name": "StopHead", "config": {{"threshold": 0.6}}}}])
        outs = [s.step(x) for x in np.zeros((3, 2, 3), np.float32)]
        state = s.get_state(); s.set_state(state)
        outs += list(s.feed(np.ones((2, 2, 3), np.float32)))
        s.reset(); s.step(np.zeros(3))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print(json.dumps({{"heavy": heavy, "steps": len(outs), "batch": s.batch_size}}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"heavy": [], "steps": 5, "batch": 1}
    assert result.stderr == ""  # not even LiteRT's "Created XNNPACK delegate" line


class LeakyPair(keras.layers.Layer):
    """A user-written Keras RNN cell (not one of Keras' own): two state
    tensors, and an output that is not a state."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.recurrent = self.add_weight(shape=(self.units, self.units), name="recurrent")

    def call(self, inputs, states):
        h, slow = states
        h = ops.tanh(ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent))
        slow = 0.7 * slow + 0.3 * h
        return h - 0.5 * slow, [h, slow]


class ShiftedStop(sg.StopHead):
    """A user's stop criterion (a `StopHead` subclass with its own `fires`):
    the export must call its `fires`, not StopHead's."""

    def fires(self, frame, stop_logit, threshold):
        return ops.sigmoid(stop_logit + 0.3) > threshold


@pytest.mark.parametrize("mode", [  # a LiteRT conversion each (~4 s): carry in the full run
    "reset", pytest.param("carry", marks=pytest.mark.slow)])
def test_custom_cells_and_criteria_equal_stream(tmp_path, long_inputs, mode):
    """User-supplied cells and criteria go through the generic ops of the
    unrolled export (they are called, not rewritten) and still match."""
    model = make_model("gru", mode, seed=12, outer=LeakyPair(8), inner=LeakyPair(8))
    stop = [ShiftedStop(0.5), sg.L2Norm(1.4, "above")]
    path = str(tmp_path / "custom.tflite")
    metadata = model.export_litert(path, stop=stop)
    assert metadata["inner_loop"] == "unrolled"
    assert metadata["inner_state_sizes"] == [8, 8]
    lite_stream, tf_stream = sg.LiteStream(path, seed=2), model.open_stream(stop=stop, seed=2)
    lengths = set()
    for t in range(60):
        got, expected = lite_stream.step(long_inputs[t]), tf_stream.step(long_inputs[t])
        assert_same(got, expected, f"step {t}")
        lengths |= {len(o) for o in got}
    assert len(lengths) >= 3, lengths
    for a, b in zip(lite_stream.get_state().values(), tf_stream.get_state().values()):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, atol=1e-5)


def test_lite_stream_prints_nothing(exports, capfd):
    """Construction, the first step (which plans the interpreter) and a new
    batch size write nothing to stdout or stderr."""
    capfd.readouterr()
    s = sg.LiteStream(exports[("gru", "carry")])
    s.step(np.zeros(3))
    s.reset()
    s.step(np.zeros((4, 3)))
    assert capfd.readouterr() == ("", "")


# ---------------------------------------------------------------------- #
# Untrusted files: the digest and the metadata are checked first.
# ---------------------------------------------------------------------- #
FUZZ_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import streamgen as sg
    from streamgen.runtimes.lite import LiteRuntime
    content = open(sys.argv[1], "rb").read()
    rng = np.random.default_rng(int(sys.argv[3]))
    outcomes = {}
    for trial in range(int(sys.argv[4])):
        data = bytearray(content)
        how = trial % 3
        if how == 0:  # a few random bytes overwritten
            for i in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[i] = int(rng.integers(0, 256))
        elif how == 1:  # one bit flipped
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
        else:  # truncated
            data = data[: int(rng.integers(0, len(data)))]
        open(sys.argv[2], "wb").write(bytes(data))
        try:
            LiteRuntime(sys.argv[2]).step(np.zeros((2, 3)), np.zeros((2, 16)))
            kind = "accepted"
        except sg.NotAnExportError:
            kind = "NotAnExportError"
        except Exception as error:  # a traceback for a user
            kind = type(error).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    print(json.dumps(outcomes))
""")


@pytest.mark.slow
def test_corrupted_exports_fail_cleanly(exports, tmp_path):
    """150 seeded corruptions: each is refused as `NotAnExportError` before
    the interpreter sees it (no traceback of another kind, no crash: the
    trials run in a child process, whose death would show)."""
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), exports[("gru", "reset")], str(tmp_path / "bad.tflite"),
         "7", "150"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"NotAnExportError": 150}


def rewrite_metadata(source, target, edit):
    """Copies an export with its metadata edited and a *valid* digest, as an
    attacker who knows the format would."""
    import flatbuffers

    from streamgen.runtimes import lite as lite_lib

    schema = lite_lib.import_schema()
    content = open(source, "rb").read()
    metadata = lite_lib.read_metadata(content)
    edit(metadata)
    metadata["digest"] = lite_lib.DIGEST_PLACEHOLDER
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    entry = next(m for m in model.metadata if m.name == lite_lib.METADATA_NAME.encode())
    model.buffers[entry.buffer].data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output())
    digest = __import__("hashlib").sha256(content).hexdigest()
    content = content.replace(f'"digest": "{lite_lib.DIGEST_PLACEHOLDER}"'.encode(),
                              f'"digest": "{digest}"'.encode())
    with open(target, "wb") as file:
        file.write(content)


def _swap_outputs(m):
    m["outputs"]["frames"], m["outputs"]["state"] = m["outputs"]["state"], m["outputs"]["frames"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["inputs"].update(x="y"), r"tensor 'y' \(input 'x'\) does not match"),
    (lambda m: m["criteria"][0]["config"].pop("threshold"),
     r"criteria\[0\]: expected a threshold"),
    (_swap_outputs, r"tensor 'output_2' \(output 'frames'\) does not match the metadata: "
                    r"expected shape \[-1, 9, 2\] float32, got \(\[-1, 20\], 'float32'\)"),
    (lambda m: m.update(input_size="3"), r"input_size: expected an integer in \[1, 1048576\], "
                                         r"got '3'"),
    (lambda m: m.update(max_steps=10 ** 9), r"max_steps: expected an integer in \[1, 1024\]"),
    (lambda m: m.update(outer_state_sizes=[8, -1]), r"outer_state_sizes: expected an integer"),
    (lambda m: m.update(decoder_state="sideways"), r"decoder_state: expected 'reset' or 'carry'"),
    (lambda m: m.update(version=1), r"format version 1; this streamgen reads version 5: "
                                    r"export it again"),
    (lambda m: m.update(version=2), r"format version 2; this streamgen reads version 5: "
                                    r"export it again"),
    (lambda m: m.update(version=3), r"format version 3; this streamgen reads version 5: "
                                    r"export it again"),
    (lambda m: m.update(version=4), r"format version 4; this streamgen reads version 5: "
                                    r"export it again"),
])
def test_edited_metadata_is_refused_by_name(exports, tmp_path, edit, message):
    path = str(tmp_path / "edited.tflite")
    rewrite_metadata(exports[("gru", "reset")], path, edit)
    with pytest.raises(sg.NotAnExportError, match=r"edited.tflite: .*" + message):
        sg.LiteStream(path)


def test_digest_mismatch_is_named(exports, tmp_path):
    content = bytearray(open(exports[("gru", "reset")], "rb").read())
    content[len(content) // 2] ^= 0x10
    path = tmp_path / "flipped.tflite"
    path.write_bytes(bytes(content))
    with pytest.raises(sg.NotAnExportError, match="its content does not match its stored digest"):
        sg.LiteStream(str(path))
