"""LiteRT latency at batch 1 in a process without TensorFlow (as deployed).

    python benchmarks/lite_latency.py MODEL.tflite INPUTS.npy ROUNDS PER_ROUND

Prints JSON: the median seconds per `LiteStream.step` over all timed calls,
the median of the best round, every timed call (`samples`), the median
seconds of `invoke()` alone (the interpreter run again on the same inputs:
the rest of a step is Python), and whether TensorFlow got imported (it must
not). 200 untimed steps come first (warm-up). `run.py` and
`lite_breakdown.py` call this with one round per process, in turn with the
other contenders; it is not meant to be run by hand.
"""

import json
import sys
import time

import numpy as np

import streamgen as sg


def main(path, inputs_path, rounds, per_round):
    inputs = np.load(inputs_path)
    stream = sg.LiteStream(path)
    samples, invokes, position = [], [], 0
    for x in inputs[:200]:
        stream.step(x)
    stream.reset()
    for _ in range(rounds):
        block = []
        for i in range(3 + per_round):
            x = inputs[position % len(inputs)]
            position += 1
            start = time.perf_counter()
            stream.step(x)
            if i >= 3:  # 3 untimed warm-up calls per round
                block.append(time.perf_counter() - start)
        samples.append(block)
        invoke = stream.runtime._bucket(1).interpreter.invoke  # noqa: SLF001  (a benchmark may look inside)
        for _ in range(per_round // 4):
            start = time.perf_counter()
            invoke()
            invokes.append(time.perf_counter() - start)
    print(json.dumps({
        "median": float(np.median(np.concatenate(samples))),
        "best_round": float(min(np.median(block) for block in samples)),
        "invoke": float(np.median(invokes)),
        "samples": [float(t) for t in np.concatenate(samples)],
        "tensorflow_loaded": "tensorflow" in sys.modules,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
