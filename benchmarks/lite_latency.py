"""LiteRT latency at batch 1 in a process without TensorFlow (as deployed).

    python benchmarks/lite_latency.py MODEL.tflite INPUTS.npy ROUNDS PER_ROUND

Prints JSON: the median seconds per `LiteStream.step` over all timed calls,
the median of the best round, and whether TensorFlow got imported (it must
not). `run.py` calls this; it is not meant to be run by hand.
"""

import json
import sys
import time

import numpy as np

import streamgen as sg


def main(path, inputs_path, rounds, per_round):
    inputs = np.load(inputs_path)
    stream = sg.LiteStream(path)
    samples, position = [], 0
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
    print(json.dumps({
        "median": float(np.median(np.concatenate(samples))),
        "best_round": float(min(np.median(block) for block in samples)),
        "tensorflow_loaded": "tensorflow" in sys.modules,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
