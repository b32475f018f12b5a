"""Speed and memory of streamgen's runtimes against the naive baselines.

    python benchmarks/run.py            # the full run (~5 minutes)
    python benchmarks/run.py --quick    # a short run (~1 minute)
    python benchmarks/run.py --smoke    # every section once, tiny sizes (the tests)

Prints one table (Markdown) of medians and ratios, all measured in this run
on the same weights (GRU, units 64, max_steps 9):

1. latency per outer step at batch 1, numpy in and out: the naive eager
   loop, `Stream.step` (TensorFlow), `Stream.step` with XLA, `LiteStream.step`
   (LiteRT), and the floor of a compiled TensorFlow call doing nothing;
2. throughput at batch 256 (row-steps per second);
3. one training step (loss + gradients) at B=32, T=20: the vectorised
   teacher-forced pass against the nested-loop reference;
4. resident memory after 1k and 100k streamed outer steps (and retraces);
5. the CLI's time to its first output line, `.keras` versus `.tflite`;
6. sampled over greedy on the same model (`sampling.py`'s paired
   measurement, its models: 64 units, max_steps 9, 3 mixtures):
   `TopP(0.9)` + `StopSample` (mse: `StopSample`) against `Greedy()`,
   TensorFlow and LiteRT, batch 1 and 256 (`--quick`: the mdn model,
   TensorFlow, batch 1 only).

`--smoke` runs every section and check once at the smallest sizes (max_steps
2, one round of a few calls, B=4 and T=3 for training, 300 streamed steps,
one CLI start each): for tests/test_benchmarks.py, which only checks that
the script still runs; its figures mean nothing.

The stop head's threshold is 1.0 (it never fires), so every path runs all 9
inner steps of every outer step: the worst case, and the same work for all.
Timings are interleaved in rounds so that a noisy neighbour slows every path
alike; each contender runs a warm block per round. "median" is over all timed
calls, "best round" the median of the quietest round. LiteRT is timed twice:
in processes without TensorFlow (how it is deployed; `lite_latency.py`, a
fresh one per round, in turn with the others) and in this one, where
TensorFlow's idle thread pools share the two cores.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamgen as sg  # noqa: E402
from streamgen import quiet  # noqa: E402

quiet.enable()  # an entry point: TensorFlow's import lines are not ours to show
tf = quiet.import_tensorflow()

import reference  # noqa: E402
import scratch  # noqa: E402  (benchmarks/scratch.py)
from streamgen.data import dataset as data_lib  # noqa: E402
from streamgen.runtimes.tf import compiled_functions  # noqa: E402

INPUT_SIZE, OUTPUT_SIZE, UNITS, MAX_STEPS = 8, 4, 64, 9
NEVER = 1.0  # StopHead threshold that never fires: all 9 inner steps run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--smoke", action="store_true",
                        help="every section once at the smallest sizes (figures mean nothing)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    quick, smoke = args.quick or args.smoke, args.smoke

    sg.StreamGen  # noqa: B018  (imports TensorFlow before the clock starts)
    import keras

    keras.utils.set_random_seed(0)
    model = sg.StreamGen(input_size=INPUT_SIZE, output_size=OUTPUT_SIZE, units=UNITS,
                         cell="gru", max_steps=2 if smoke else MAX_STEPS,
                         stop=[sg.StopHead(NEVER)])
    folder = scratch.folder("streamgen-bench-")
    lite_path = os.path.join(folder, "model.tflite")
    model.export_litert(lite_path)
    rng = np.random.default_rng(0)
    rows, checks = [], []
    where = machine()
    print(f"machine: {where}", flush=True)

    # 1. Latency at batch 1. ------------------------------------------------
    inputs = rng.normal(size=(4096, INPUT_SIZE)).astype(np.float32)
    naive = reference.NaiveStream(model, NEVER)
    streams = {
        "tf": model.open_stream(),
        "xla": model.open_stream(jit_compile=True),
        "litert": sg.LiteStream(lite_path),
    }
    noop = tf.function(lambda: tf.constant(0.0))
    noop_concrete = noop.get_concrete_function()
    checks.append(check_equal_outputs(naive, streams, inputs[:3 if smoke else 20]))
    contenders = {
        "naive": cycling(naive.step, inputs),
        "tf": cycling(streams["tf"].step, inputs),
        "xla": cycling(streams["xla"].step, inputs),
        "litert": cycling(streams["litert"].step, inputs),
        "noop": noop,
        "noop_concrete": noop_concrete,
    }
    counts = {"naive": 1 if smoke else 5 if quick else 20}
    rounds, per_round = (1, 5) if smoke else (3, 100) if quick else (7, 400)
    warmup = 1 if smoke else 3
    lite_alone = LiteWithoutTensorflow(lite_path, inputs)
    times = interleaved(contenders, rounds=rounds,
                        per_round=lambda name: counts.get(name, per_round),
                        elsewhere={"litert_alone": lite_alone.block}, warmup=warmup)
    lite_invoke = lite_alone.invoke()
    base = times["naive"][0]
    labels = {
        "naive": "naive eager loop (Keras layers per inner step)",
        "tf": "`Stream.step` (TensorFlow, compiled)",
        "xla": "`Stream.step`, `jit_compile=True` (XLA)",
        "litert_alone": "`LiteStream.step` (LiteRT), process without TensorFlow",
        "litert": "`LiteStream.step` (LiteRT), TensorFlow loaded too",
        "noop": "floor: `tf.function` doing nothing",
        "noop_concrete": "floor: its concrete function doing nothing",
    }
    targets = {"tf": 20, "xla": 60, "litert_alone": 300, "litert": 300}
    for name, label in labels.items():
        target = targets.get(name)
        note = f"target >= {target}x" if target else ""
        if name.startswith("litert"):
            note += ", <= 50 us"
        if name == "litert_alone":
            note += f"; `invoke()` alone {us(lite_invoke)}"
        median, best = times[name]
        rows.append(("1. latency, batch 1", label, us(median), us(best),
                     f"{base / median:.1f}x", note))

    # 2. Throughput at batch 256. ------------------------------------------
    batch_inputs = rng.normal(size=(64, 256, INPUT_SIZE)).astype(np.float32)
    batch_streams = {
        "tf": model.open_stream(),
        "xla": model.open_stream(jit_compile=True),
        "litert": sg.LiteStream(lite_path),
    }
    times = interleaved(
        {name: cycling(s.step, batch_inputs) for name, s in batch_streams.items()},
        rounds=1 if smoke else 2 if quick else 5,
        per_round=lambda name: 2 if smoke else 10 if quick else 40, warmup=warmup,
    )
    for name, label in (("tf", "`Stream.step` (TensorFlow)"),
                        ("xla", "`Stream.step` (XLA)"),
                        ("litert", "`LiteStream.step` (LiteRT)")):
        median, best = times[name]
        rows.append(("2. throughput, batch 256", label, us(median), us(best),
                     f"{256 / median:,.0f} row-steps/s",
                     f"{times['tf'][0] / median:.1f}x TF"))

    # 3. One training step. ------------------------------------------------
    rows += training_rows(model, rng, quick, checks, smoke)

    # 4. Memory over a long stream. -----------------------------------------
    rows += memory_rows(model, lite_path, inputs, quick, smoke)

    # 5. CLI time to first output. ------------------------------------------
    rows += cli_rows(model, lite_path, folder, starts=1 if smoke else 3)

    # 6. Sampled over greedy. ----------------------------------------------
    rows += sampling_rows(folder, quick, smoke)

    print_table(rows, checks)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"machine": where, "rows": rows, "checks": checks}, file, indent=1)


# ---------------------------------------------------------------------- #
# Timing helpers.
# ---------------------------------------------------------------------- #
def cycling(step, inputs):
    """A no-argument callable stepping through `inputs` in a loop."""
    position = [0]

    def call():
        x = inputs[position[0] % len(inputs)]
        position[0] += 1
        return step(x)

    return call


def interleaved(contenders, rounds, per_round, elsewhere=None, warmup=3):
    """Seconds per call of each contender: `{name: (median, best round)}`.

    Each round runs every contender for a warm block (`warmup` untimed
    calls, then `per_round(name)` timed ones), so slow phases of the machine hit all.
    `median` is over all timed calls; `best round` is the median of the
    quietest round (what the code costs when the machine is not shared).
    `elsewhere`: `{name: block(count) -> [seconds, ...]}`, contenders timed
    outside this process (`count` timed calls, warm-up their own), one
    block per round in turn with the others.
    """
    elsewhere = elsewhere or {}
    samples = {name: [] for name in list(contenders) + list(elsewhere)}
    for _ in range(rounds):
        for name, call in contenders.items():
            block = []
            for _ in range(warmup):
                call()
            for _ in range(per_round(name)):
                start = time.perf_counter()
                call()
                block.append(time.perf_counter() - start)
            samples[name].append(block)
        for name, block in elsewhere.items():
            samples[name].append(block(per_round(name)))
    return {
        name: (float(np.median(np.concatenate(blocks))),
               float(min(np.median(block) for block in blocks)))
        for name, blocks in samples.items()
    }


class LiteWithoutTensorflow:
    """`LiteStream.step` timed in fresh processes that never import TF.

    `block(count)` runs `lite_latency.py` for one round of `count` timed
    steps (after its own warm-up) and returns their durations; `invoke()`
    is the median of `invoke()` alone over the blocks run so far.
    """

    def __init__(self, lite_path, inputs):
        self.lite_path = lite_path
        self.inputs_path = os.path.join(os.path.dirname(lite_path), "inputs.npy")
        np.save(self.inputs_path, inputs)
        self.script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lite_latency.py")
        self.invokes = []

    def block(self, count):
        result = subprocess.run(
            [sys.executable, self.script, self.lite_path, self.inputs_path, "1", str(count)],
            capture_output=True, text=True, check=True,
        )
        report = json.loads(result.stdout)
        assert not report["tensorflow_loaded"]
        self.invokes.append(report["invoke"])
        return report["samples"]

    def invoke(self):
        return float(np.median(self.invokes))


def us(seconds):
    return f"{seconds * 1e6:,.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


# ---------------------------------------------------------------------- #
# The sections.
# ---------------------------------------------------------------------- #
def check_equal_outputs(naive, streams, inputs):
    """All four runtimes give the same Out[i] (else the timings mean nothing)."""
    worst = 0.0
    for x in inputs:
        expected = naive.step(x)
        for stream in streams.values():
            got = stream.step(x)
            assert got.shape == expected.shape, (got.shape, expected.shape)
            worst = max(worst, float(np.abs(got - expected).max(initial=0.0)))
    for stream in streams.values():
        stream.reset()
    return f"naive, TF, XLA and LiteRT agree on {len(inputs)} steps: max |diff| {worst:.1e}"


def training_rows(model, rng, quick, checks, smoke=False):
    (B, T), M, O = (4, 3) if smoke else (32, 20), model.max_steps, OUTPUT_SIZE
    x = tf.constant(rng.normal(size=(B, T, INPUT_SIZE)).astype(np.float32))
    lengths = rng.integers(0, M + 1, size=(B, T))
    frame_mask, stop_labels, stop_mask = data_lib.masks_from_lengths(lengths, None, M)
    frames = rng.normal(size=(B, T, M, O)).astype(np.float32) * frame_mask[..., None]
    y = {"frames": tf.constant(frames), "frame_mask": tf.constant(frame_mask),
         "stop_labels": tf.constant(stop_labels), "stop_mask": tf.constant(stop_mask)}
    inputs = {"inputs": x, "frames": y["frames"]}
    variables = model.trainable_variables

    @tf.function
    def vectorised():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(y=y, y_pred=model(inputs, training=True))
        return loss, tape.gradient(loss, variables)

    def nested():
        with tf.GradientTape() as tape:
            prediction = reference.nested_loop_forward(model, x, y["frames"], lengths)
            loss = model.compute_loss(y=y, y_pred=prediction)
        return loss, tape.gradient(loss, variables)

    loss_v, grads_v = vectorised()
    loss_n, grads_n = nested()
    diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(grads_v, grads_n))
    checks.append(f"training: vectorised and nested-loop losses {float(loss_v):.6f} / "
                  f"{float(loss_n):.6f}, max |grad diff| {diff:.1e}")
    times = interleaved({"vectorised": vectorised, "nested": nested},
                        rounds=1 if smoke else 2 if quick else 3,
                        per_round=lambda name: (1 if smoke else 2 if quick else 4)
                        if name == "nested" else (2 if smoke else 10 if quick else 30),
                        warmup=0 if smoke else 3)  # smoke: the checks' calls warmed both
    ratio = times["nested"][0] / times["vectorised"][0]
    section = f"3. training step, B={B}, T={T}"
    return [
        (section, "nested `tf.while_loop` + `TensorArray`, eager",
         us(times["nested"][0]), us(times["nested"][1]), "1.0x", ""),
        (section, "vectorised teacher forcing, `tf.function`",
         us(times["vectorised"][0]), us(times["vectorised"][1]), f"{ratio:.1f}x",
         "target >= 15x"),
    ]


def memory_rows(model, lite_path, inputs, quick, smoke=False):
    first, total = (100, 300) if smoke else (1_000, 10_000 if quick else 100_000)
    rows = []
    for name, stream in (("TF", model.open_stream()), ("LiteRT", sg.LiteStream(lite_path))):
        traces = compiled_functions(model).tracing_count()
        marks = {}
        for i in range(total):
            stream.step(inputs[i % len(inputs)])
            if i + 1 in (first, total):
                gc.collect()
                marks[i + 1] = rss_mb()
        growth = marks[total] - marks[first]
        retraces = (f"retraces: {compiled_functions(model).tracing_count() - traces}" if name == "TF"
                    else "no graph to retrace")
        rows.append((f"4. memory, {total:,} steps",
                     f"{name}: RSS after {thousands(first)} / {thousands(total)} steps",
                     f"{marks[first]:.0f} / {marks[total]:.0f} MB", "",
                     f"{growth:+.1f} MB", f"target < 20 MB; {retraces}"))
    return rows


def thousands(count):
    """`1000 -> "1k"`; counts that are no multiple of 1000 as they are."""
    return f"{count // 1000}k" if count % 1000 == 0 else f"{count:,}"


def sampling_rows(folder, quick, smoke=False):
    """Section 6: `sampling.paired` per frame kind, runtime and batch size."""
    import sampling

    kinds = ("mdn",) if quick else ("mdn", "categorical", "mse")
    runtimes = ("tf",) if quick else ("tf", "lite")
    rounds, steps = (1, 2) if smoke else (2, 10) if quick else (6, 30)
    rows = []
    for frame_loss in kinds:
        model = sampling.make(frame_loss)
        path = os.path.join(folder, f"sampling-{frame_loss}.tflite")
        if "lite" in runtimes:
            model.export_litert(path)
        for batch in (1,) if quick else (1, 256):
            for runtime in runtimes:
                result = sampling.paired(model, path, frame_loss, runtime, batch, rounds, steps)
                what = ("`StopSample`" if frame_loss == "mse" else "`TopP(0.9)` + `StopSample`")
                name = {"tf": "TensorFlow", "lite": "LiteRT"}[runtime]
                rows.append(("6. sampled over greedy",
                             f"{frame_loss}, {name}, batch {batch}: {what} / `Greedy()`",
                             us(result["sampled_us"] / 1e6), "",
                             f"{result['sampled/greedy']:.2f}x",
                             f"greedy {us(result['greedy_us'] / 1e6)}; target <= 1.20x "
                             "(median of paired rounds)"))
    return rows


def cli_rows(model, lite_path, folder, starts=3):
    keras_path = os.path.join(folder, "model.keras")
    model.save(keras_path)
    command = os.path.join(os.path.dirname(sys.executable), "streamgen")
    if not os.path.exists(command):
        return [("5. CLI first output", "`streamgen stream`", "pending", "", "",
                 "the `streamgen` console script is not installed")]
    rows = []
    line = " ".join(["0.1"] * INPUT_SIZE) + "\n"
    for name, path in ((".keras (TensorFlow)", keras_path), (".tflite (LiteRT)", lite_path)):
        seconds = []
        for _ in range(starts):
            result = first_line_seconds([command, "stream", "--model", path], line)
            if isinstance(result, str):
                seconds = result
                break
            seconds.append(result)
        if isinstance(seconds, str):
            rows.append(("5. CLI first output", f"`streamgen stream --model {name}`",
                         "pending", "", "", seconds))
        else:
            note = "target < 1 s" if "tflite" in name else ""
            rows.append(("5. CLI first output", f"`streamgen stream --model {name}`",
                         f"{np.median(seconds):.2f} s", f"{min(seconds):.2f} s", "", note))
    return rows


def first_line_seconds(command, line):
    """Seconds from process start to its first stdout line, or why not."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdin.write(line)
    process.stdin.flush()
    answer = process.stdout.readline()
    elapsed = time.perf_counter() - start
    process.stdin.close()
    process.wait(timeout=60)
    if not answer.strip().startswith("["):
        error = process.stderr.read().strip().splitlines()
        return "not supported yet: " + (error[-1] if error else f"status {process.returncode}")
    return elapsed


# ---------------------------------------------------------------------- #
# Report.
# ---------------------------------------------------------------------- #
def rss_mb():
    with open("/proc/self/statm") as file:
        pages = int(file.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine():
    model_name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    model_name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from importlib.metadata import version

    return (f"{model_name}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {version('keras')}, "
            f"ai-edge-litert {version('ai-edge-litert')}, load average {load:.2f} at start")


def print_table(rows, checks):
    print()
    print("| section | what | median | best round | ratio | notes |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for check in checks:
        print(f"- check: {check}")
    print(f"- load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
