"""`StreamGen`: an outer recurrent model and an inner decoder with STOP tokens.

Architecture, per outer step `i` (shapes for a batch of `B` rows):

- model_a, the *outer* cell, steps once per input and carries its state:
  `x[i] (B, input_size) -> h[i] (B, outer_units)`, then
  `IR[i] = ir_projection(h[i])  (B, ir_size)` (identity when `ir_size=None`).
- model_b, the *inner* cell, runs inner steps `j = 0, 1, ...` on
  `concat(IR[i], y[i, j-1])  (B, ir_size + output_size)` (zeros at `j = 0`):
  `frame_head` maps its output to the frame `y[i, j]  (B, output_size)` and
  `stop_head` to a stop logit `(B,)`.
- model_b's state at `j = 0` is `tanh(Dense(IR[i]))` per state tensor in
  `"reset"` mode, or the state where `Out[i-1]` ended (its STOP step
  included) in `"carry"` mode (zeros before the first outer step).
- STOP-token semantics: the step where a stop criterion fires is not
  emitted, so `len(Out[i])` is in `[0, max_steps]`.

`call()` is the teacher-forced pass used for training: model_a over all `T`
steps at once, model_b over all `(row, outer step)` pairs at once (`"reset"`)
or over each row's inner steps in order with a mask (`"carry"`). Decoding
(`stream`, `open_stream`, `decode`) lives in `decode.py` and `stream.py`.
"""

import keras
import numpy as np

from streamgen import checks
from streamgen import criteria
from streamgen import mdn as mdn_lib
from streamgen import samplers
from streamgen.runtimes import tf as tf_runtime
from streamgen.runtimes.base import fingerprint_of
from streamgen import saving
from streamgen import stopping
from streamgen import losses
from streamgen.quiet import import_tensorflow
from streamgen.stream import Stream

tf = import_tensorflow()
samplers.register_keras()

CELLS = {
    "gru": keras.layers.GRUCell,
    "lstm": keras.layers.LSTMCell,
    "simple_rnn": keras.layers.SimpleRNNCell,
}
DECODER_STATES = ("reset", "carry")
STOP_NETWORKS = ("shared", "separate")


@keras.saving.register_keras_serializable(package="streamgen")
class StreamGen(keras.Model):
    """Hierarchical streaming generator: one input in, one ragged `Out[i]` out.

    Args:
        input_size: positive int, width of each input vector `x[i]`.
        output_size: positive int, width of each frame of `Out[i]`.
        ir_size: positive int, width of the intermediate representation
            `IR[i]`; `None` uses model_a's output as `IR[i]` unprojected.
        units: positive int, units of the default cells.
        cell: `"gru"`, `"lstm"` or `"simple_rnn"`: the kind of the default
            cells, used where `outer` / `inner` is `None`.
        outer: optional Keras RNN cell for model_a (an object with the Keras
            cell API: `state_size` and `call(inputs, states)`), e.g.
            `trained_model_a.get_layer("gru").cell`. It must accept inputs
            of width `input_size`.
        inner: optional Keras RNN cell for model_b. It must accept inputs of
            width `ir_size + output_size`.
        max_steps: int in `[1, 1024]`, the cap on `len(Out[i])`. Defaults
            to 9. Decoding memory and time grow linearly with it.
        decoder_state: `"reset"` or `"carry"` (see the module docstring).
        stop: default stop criteria: a `sg.StopCriterion`, a list of them
            ("any of"), or `[]` for the cap alone. Defaults to
            `sg.StopHead(threshold=0.5)`.
        frame_loss: `"mse"`, `"mae"`, `"categorical"` or `"mdn"`: the loss on
            emitted frames. `"categorical"` puts a softmax on the frame head
            (frames are distributions over `output_size` classes; targets
            one-hot or probabilities) and, at inference, feeds the predicted
            distribution back to model_b. `"mdn"` makes the frame head a
            mixture of `mixtures` diagonal Gaussians (`streamgen.mdn`: K
            logits, K * output_size means and scales, scales `>= 1e-3`),
            trained by negative log-likelihood; greedy decoding emits the
            mean of the most likely component.
        mixtures: positive int, the number of mixture components of
            `"mdn"` frames (unused otherwise). Defaults to 5.
        stop_network: `"shared"` (default): the stop logit is a `Dense(1)`
            on model_b's output, and the STOP loss trains model_b too.
            `"separate"`: a small network of its own (`Dense(units, tanh)`
            then `Dense(1)`) on model_b's output with its gradient stopped
            (as Coqui TTS's `separate_stopnet`), so that a frame loss that
            dominates the shared features (a mixture's likelihood) cannot
            starve the STOP decision, and the STOP loss never pulls on the
            frames. Decoding is the same function either way.
        stop_loss_weight: non-negative float, the weight of the STOP loss
            in the total loss. Defaults to 1.0.
        stop_pos_weight: positive float, the weight of the positive class
            (the STOP token) in the STOP binary cross-entropy; above 1
            counters a data set of mostly long outputs. Defaults to 1.0.
        **kwargs: passed to `keras.Model` (`name`, ...).

    Training: `compile(optimizer=...)` (no `loss`: the model has its own)
    then `fit` on `sg.make_dataset(...)`. The loss is the masked frame loss
    plus `stop_loss_weight` times the masked STOP binary cross-entropy
    (see `streamgen.losses.masked_losses`); `fit` reports `loss`, `frame_loss`,
    `stop_loss` and `stop_accuracy`.

    Call arguments (teacher-forced pass, see `call`):
        inputs: dict with `"inputs"` `(B, T, input_size)`, `"frames"`
            `(B, T, max_steps, output_size)` (the true frames, zero padded)
            and, in `"carry"` mode, `"lengths"` int `(B, T)`.

    Raises:
        ValueError: for an invalid size, `max_steps`, `cell`,
            `decoder_state`, or a cell that cannot take its inputs.
        TypeError: if `outer` / `inner` is not a Keras RNN cell.

    Example:

    >>> model = sg.StreamGen(input_size=3, output_size=2, units=16)
    >>> outs = list(model.stream(np.random.rand(5, 3)))  # 5 arrays (L_i, 2)
    >>> len(outs), all(o.shape[1] == 2 and 0 <= len(o) <= 9 for o in outs)
    (5, True)
    """

    def __init__(
        self,
        input_size,
        output_size,
        ir_size=32,
        units=64,
        cell="gru",
        outer=None,
        inner=None,
        max_steps=9,
        decoder_state="reset",
        stop=None,
        frame_loss="mse",
        stop_loss_weight=1.0,
        stop_pos_weight=1.0,
        mixtures=mdn_lib.DEFAULT_MIXTURES,
        stop_network="shared",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_size = checks.positive_int("input_size", input_size)
        self.output_size = checks.positive_int("output_size", output_size)
        self.ir_size = None if ir_size is None else checks.positive_int("ir_size", ir_size)
        self.units = checks.positive_int("units", units)
        self.max_steps = checks.check_max_steps(max_steps)
        if cell not in CELLS:
            raise ValueError(
                "Received an invalid value for argument `cell`, expected one "
                f"of {sorted(CELLS)}, got {cell!r}."
            )
        self.cell = cell
        self.decoder_state = checks.one_of("decoder_state", decoder_state, DECODER_STATES)
        self._stop = stopping.normalize_stop(
            [stopping.StopHead(0.5)] if stop is None else stop
        )
        self.frame_loss = losses.check_frame_loss(frame_loss)
        self.mixtures = checks.positive_int("mixtures", mixtures)
        self.stop_network = checks.one_of("stop_network", stop_network, STOP_NETWORKS)
        self.stop_loss_weight = losses.check_weight(
            "stop_loss_weight", stop_loss_weight, allow_zero=True
        )
        self.stop_pos_weight = losses.check_weight(
            "stop_pos_weight", stop_pos_weight, allow_zero=False
        )

        self._custom_outer = outer is not None
        self._custom_inner = inner is not None
        self.outer_cell = (
            _check_cell("outer", outer) if outer else CELLS[cell](units, name="outer_cell")
        )
        self.inner_cell = (
            _check_cell("inner", inner) if inner else CELLS[cell](units, name="inner_cell")
        )
        self.outer_state_sizes = _state_sizes(self.outer_cell)
        self.inner_state_sizes = _state_sizes(self.inner_cell)

        outer_width = _probe_cell(
            "outer", self.outer_cell, self.input_size, "input_size", lambda w: f"input_size={w}")
        if self.ir_size is None:
            self.ir_projection = None
            self.ir_width = outer_width
        else:
            self.ir_projection = keras.layers.Dense(self.ir_size, name="ir_projection")
            self.ir_projection.build((None, outer_width))
            self.ir_width = self.ir_size
        inner_width = _probe_cell(
            "inner", self.inner_cell, self.ir_width + self.output_size,
            f"ir_size + output_size = {self.ir_width} + {self.output_size}",
            lambda w: (f"ir_size={w - self.output_size}" if w > self.output_size
                       else "a cell that takes more than output_size inputs"))
        self.frame_head = keras.layers.Dense(
            mdn_lib.head_width(self.mixtures, self.output_size)
            if self.frame_loss == "mdn" else self.output_size,
            activation="softmax" if self.frame_loss == "categorical" else None,
            name="frame_head",
        )
        self.frame_head.build((None, inner_width))
        self.stop_hidden = None
        stop_width = inner_width
        if stop_network == "separate":
            self.stop_hidden = keras.layers.Dense(
                self.units, activation="tanh", name="stop_hidden")
            self.stop_hidden.build((None, inner_width))
            stop_width = self.units
        self.stop_head = keras.layers.Dense(1, name="stop_head")
        self.stop_head.build((None, stop_width))
        self.state_projections = []
        if decoder_state == "reset":
            for index, size in enumerate(self.inner_state_sizes):
                projection = keras.layers.Dense(
                    size, activation="tanh", name=f"state_projection_{index}"
                )
                projection.build((None, self.ir_width))
                self.state_projections.append(projection)

        # Whole-sequence wrappers for the teacher-forced pass; they share the
        # cells (and so the weights) with the step-by-step decoder.
        self.outer_rnn = keras.layers.RNN(
            self.outer_cell, return_sequences=True, name="outer_rnn"
        )
        self.outer_rnn.build((None, None, self.input_size))
        self.inner_rnn = keras.layers.RNN(
            self.inner_cell, return_sequences=True, name="inner_rnn"
        )
        self.inner_rnn.build((None, None, self.ir_width + self.output_size))
        self.built = True
        # Shown by `fit` / `evaluate` beside `loss` (Keras tracks them).
        self.frame_loss_tracker = keras.metrics.Mean(name="frame_loss")
        self.stop_loss_tracker = keras.metrics.Mean(name="stop_loss")
        self.stop_accuracy_tracker = keras.metrics.Mean(name="stop_accuracy")

    # ------------------------------------------------------------------ #
    # Building blocks shared by training and decoding.
    # ------------------------------------------------------------------ #
    @property
    def stop(self):
        """The default stop criteria, a tuple of `sg.StopCriterion`."""
        return self._stop

    def project_ir(self, outer_output):
        """`IR = ir_projection(outer_output)`; `(..., outer_units) -> (..., ir_width)`."""
        if self.ir_projection is None:
            return outer_output
        return self.ir_projection(outer_output)

    def initial_inner_state(self, ir):
        """model_b's state at `j = 0` in `"reset"` mode.

        Args:
            ir: float tensor `(N, ir_width)`.

        Returns:
            A list of float tensors `(N, size)`, one per inner state tensor.
        """
        return [projection(ir) for projection in self.state_projections]

    def inner_heads(self, inner_output):
        """Frame and stop logit from model_b's output.

        Args:
            inner_output: float tensor `(..., inner_units)`.

        Returns:
            `(frames (..., output_size), stop_logits (...,))`; for `"mdn"`
            frames, the greedy frame (see `frame_from_head`).
        """
        frames = self.frame_from_head(self.frame_head(inner_output))
        stop_logits = self.stop_logit(inner_output)[..., 0]
        return frames, stop_logits

    def stop_logit(self, inner_output):
        """The stop logit from model_b's output: `(..., units) -> (..., 1)`.

        With `stop_network="separate"` its own hidden layer on the output
        with the gradient stopped; otherwise `stop_head` on the output.
        """
        if self.stop_hidden is None:
            return self.stop_head(inner_output)
        return self.stop_head(self.stop_hidden(tf.stop_gradient(inner_output)))

    def split_mixture(self, head):
        """Splits the frame head's raw output of an `"mdn"` model.

        Args:
            head: float tensor `(..., mixtures * (1 + 2 * output_size))`.

        Returns:
            `(logits (..., K), means (..., K, output_size), scales (..., K,
            output_size))`, the scales `>= streamgen.mdn.SCALE_FLOOR`.
        """
        if self.frame_loss != "mdn":
            raise ValueError(
                "split_mixture needs a model with frame_loss='mdn', this one "
                f"has frame_loss={self.frame_loss!r}."
            )
        return mdn_lib.split(head, self.output_size)

    def greedy_frame(self, logits, means):
        """The mean of the most likely component: `(..., K), (..., K, D) -> (..., D)`."""
        return mdn_lib.greedy_frame(logits, means)

    def frame_from_head(self, head):
        """The greedy frame from the frame head's output.

        The head's output itself for `"mse"`, `"mae"` and `"categorical"`
        frames; the mean of the most likely component for `"mdn"` frames.
        """
        if self.frame_loss != "mdn":
            return head
        logits, means, _ = self.split_mixture(head)
        return self.greedy_frame(logits, means)

    # ------------------------------------------------------------------ #
    # The kernel of one outer step: what the compiled decoders call.
    # ------------------------------------------------------------------ #
    def outer_update(self, x, outer_state, inner_state):
        """model_a's step, and where model_b starts for this `Out[i]`.

        Args:
            x: float tensor `(B, input_size)`.
            outer_state, inner_state: lists of float tensors `(B, size)`.

        Returns:
            `(outer_state, ir, start_state)`: model_a's new state (a list),
            `IR[i]` `(B, ir_width)`, and model_b's start state (a list):
            from `IR[i]` in `"reset"` mode, `inner_state` in `"carry"` mode.
        """
        outer_output, outer_state = self.outer_cell(x, list(outer_state))
        ir = self.project_ir(outer_output)  # (B, ir)
        if self.decoder_state == "reset":
            start_state = self.initial_inner_state(ir)
        else:
            start_state = list(inner_state)
        return _as_list(outer_state), ir, start_state

    def inner_step(self, ir, previous, state):
        """One step of model_b: the next frame and its stop logit.

        Args:
            ir: float tensor `(B, ir_width)`, `IR[i]`.
            previous: float tensor `(B, output_size)`, the previous frame
                (zeros at `j = 0`), or `None` for zeros.
            state: list of float tensors `(B, size)`, model_b's state.

        Returns:
            `(frame, stop_logit, state)`: `(B, output_size)`, `(B, 1)` (as
            the head's `Dense` gives it: the unrolled LiteRT export joins
            the steps' logits with one concatenation instead of a reshape
            per step), and model_b's new state (a list). For `"mdn"`
            frames the frame is the greedy one (the mean of the most likely
            component, `frame_from_head`).
        """
        head, stop_logit, state = self.inner_head_step(ir, previous, state)
        return self.frame_from_head(head), stop_logit, state  # (B, O), (B, 1)

    def inner_head_step(self, ir, previous, state):
        """`inner_step` before the frame is chosen: the frame head's raw output.

        Returns:
            `(head, stop_logit, state)`: `head` is `(B, output_size)` (the
            frame) for `"mse"` / `"mae"` / `"categorical"` frames and
            `(B, mixtures * (1 + 2 * output_size))` for `"mdn"` frames (see
            `split_mixture`); `stop_logit` `(B, 1)`; the new state.
        """
        if previous is None:
            inner_input = tf.pad(ir, [[0, 0], [0, self.output_size]])  # (B, ir + O)
        else:
            inner_input = tf.concat([ir, previous], axis=-1)  # (B, ir + O)
        output, state = self.inner_cell(inner_input, list(state))
        head = self.frame_head(output)  # (B, O) or (B, K * (1 + 2 * O))
        return head, self.stop_logit(output), _as_list(state)

    def describe(self):
        """What the model is, as a JSON-ready dict (what `streamgen info` prints).

        Returns:
            dict with `input_size`, `output_size`, `ir_size`, `outer_cell` and
            `inner_cell` (`{"class", "units"}`), `max_steps`,
            `decoder_state`, `stop` (`{"class_name", "config"}` dicts),
            `frame_loss` (and `mixtures` for `"mdn"` frames) and
            `parameters`.
        """
        def cell(c):
            units = getattr(c, "units", None)
            return {"class": type(c).__name__, "units": int(units) if units else None}

        return {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "ir_size": self.ir_size,
            "outer_cell": cell(self.outer_cell),
            "inner_cell": cell(self.inner_cell),
            "max_steps": self.max_steps,
            "decoder_state": self.decoder_state,
            "stop": [criteria.criterion_dict(c) for c in self.stop],
            "frame_loss": self.frame_loss,
            **({"mixtures": self.mixtures} if self.frame_loss == "mdn" else {}),
            **({"stop_network": "separate"} if self.stop_hidden is not None else {}),
            "parameters": int(self.count_params()),
        }

    def fingerprint(self):
        """Identifies the weights and shapes: `"sha256:<16 hex digits>"`.

        Equal for a model, its saved copy and its LiteRT export (stored in
        the file), so that states can be checked to belong to it.
        """
        config = {
            "input_size": self.input_size, "output_size": self.output_size,
            "max_steps": self.max_steps, "decoder_state": self.decoder_state,
            "outer_state_sizes": tuple(self.outer_state_sizes),
            "inner_state_sizes": tuple(self.inner_state_sizes),
        }
        return fingerprint_of(config, [w.numpy() for w in self.weights])

    def get_initial_state(self, batch_size):
        """Zeros for a fresh stream of `batch_size` rows.

        Returns:
            `{"outer": [np.ndarray (batch_size, size), ...],
              "inner": [np.ndarray (batch_size, size), ...]}`. In `"reset"`
            mode the inner state is recomputed from `IR[i]` at every outer
            step; it is kept so that every mode has the same state layout.
        """
        return {
            "outer": [np.zeros((batch_size, s), np.float32) for s in self.outer_state_sizes],
            "inner": [np.zeros((batch_size, s), np.float32) for s in self.inner_state_sizes],
        }

    # ------------------------------------------------------------------ #
    # Teacher-forced pass.
    # ------------------------------------------------------------------ #
    def call(self, inputs, training=False):
        """Teacher-forced pass over whole sequences.

        model_b's input at inner step `j` is the *true* frame `j - 1`
        (zeros at `j = 0`), so every inner step of every outer step is
        computed at once.

        Args:
            inputs: dict with
                `"inputs"`: float `(B, T, input_size)`;
                `"frames"`: float `(B, T, max_steps, output_size)`, the true
                frames, zero padded;
                `"lengths"`: int `(B, T)`, the true lengths (required in
                `"carry"` mode: inner steps `j > lengths` are masked so that
                they neither emit nor change the carried state).
            training: Python bool.

        Returns:
            dict with `"frames"` `(B, T, max_steps, output_size)` and
            `"stop_logits"` `(B, T, max_steps)`; for `"mdn"` frames also
            `"mixture"` `(B, T, max_steps, K * (1 + 2 * output_size))`, the
            frame head's raw output (the loss's input), `"frames"` being
            the greedy frames.
        """
        x = tf.convert_to_tensor(inputs["inputs"], tf.float32)  # (B, T, I)
        targets = tf.convert_to_tensor(inputs["frames"], tf.float32)  # (B, T, M, O)
        steps = targets.shape[2]
        if steps is not None and steps != self.max_steps:
            raise ValueError(
                f"Expected `frames` padded to max_steps={self.max_steps} inner "
                f"steps, got shape {tuple(targets.shape)}."
            )
        batch, outer_steps = tf.shape(x)[0], tf.shape(x)[1]
        M, O = self.max_steps, self.output_size

        ir = self.project_ir(self.outer_rnn(x, training=training))  # (B, T, ir)
        previous = tf.concat(  # (B, T, M, O): frame j - 1, zeros at j = 0
            [tf.zeros_like(targets[:, :, :1]), targets[:, :, :-1]], axis=2
        )
        ir_repeated = tf.repeat(ir[:, :, None, :], M, axis=2)  # (B, T, M, ir)
        inner_inputs = tf.concat([ir_repeated, previous], axis=-1)  # (B, T, M, ir+O)
        width = self.ir_width + O

        if self.decoder_state == "reset":
            flat_inputs = tf.reshape(inner_inputs, [-1, M, width])  # (B*T, M, ir+O)
            flat_ir = tf.reshape(ir, [-1, self.ir_width])  # (B*T, ir)
            hidden = self.inner_rnn(
                flat_inputs,
                initial_state=self.initial_inner_state(flat_ir),
                training=training,
            )  # (B*T, M, units)
        else:
            if inputs.get("lengths") is None:
                raise ValueError(
                    "The teacher-forced pass of a model with "
                    "decoder_state='carry' needs `lengths` (B, T) in its inputs."
                )
            lengths = tf.cast(inputs["lengths"], tf.int32)  # (B, T)
            # Inner step j of outer step t runs iff j <= len (the STOP step
            # runs too): the state carried to t + 1 is exactly the state
            # that free-running decoding hands on.
            runs = tf.range(M)[None, None, :] <= lengths[:, :, None]  # (B, T, M)
            hidden = self.inner_rnn(
                tf.reshape(inner_inputs, [batch, -1, width]),  # (B, T*M, ir+O)
                mask=tf.reshape(runs, [batch, -1]),
                training=training,
            )  # (B, T*M, units)
        hidden = tf.reshape(hidden, [batch, outer_steps, M, -1])  # (B, T, M, units)
        if self.frame_loss == "mdn":
            head = self.frame_head(hidden)  # (B, T, M, K * (1 + 2 * O))
            return {"frames": self.frame_from_head(head), "mixture": head,
                    "stop_logits": self.stop_logit(hidden)[..., 0]}
        frames, stop_logits = self.inner_heads(hidden)
        return {"frames": frames, "stop_logits": stop_logits}

    # ------------------------------------------------------------------ #
    # Training hooks (`fit` / `evaluate` of Keras).
    # ------------------------------------------------------------------ #
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """Masked frame loss + `stop_loss_weight` * masked STOP loss.

        Args:
            x: the model's inputs (unused).
            y: dict from `sg.make_dataset`: `"frames"` `(B, T, M, O)`,
                `"frame_mask"`, `"stop_labels"`, `"stop_mask"` `(B, T, M)`.
            y_pred: dict from `call`.
            sample_weight: optional float `(B,)`, a weight per sequence.
            training: unused.

        Returns:
            A float scalar tensor (plus any regularization losses).

        Raises:
            ValueError: if the model was compiled with a `loss`.
        """
        del x, training
        if getattr(self, "loss", None) is not None:
            raise ValueError(
                "Received an invalid value for argument `loss` of compile(), "
                "expected None (StreamGen has its own masked loss), got "
                f"{self.loss!r}."
            )
        parts = self._loss_parts(y, y_pred, sample_weight)
        return losses.total_loss(parts, self.stop_loss_weight, self.losses)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates `frame_loss`, `stop_loss`, `stop_accuracy`; returns all metrics."""
        parts = self._loss_parts(y, y_pred, sample_weight)
        # Weighted like Keras' `loss` tracker (by batch size), so that the
        # epoch figures keep `loss == frame_loss + w * stop_loss`.
        batch = tf.cast(tf.shape(y["frames"])[0], tf.float32)
        self.frame_loss_tracker.update_state(parts["frame_loss"], sample_weight=batch)
        self.stop_loss_tracker.update_state(parts["stop_loss"], sample_weight=batch)
        self.stop_accuracy_tracker.update_state(
            parts["stop_accuracy"], sample_weight=parts["stop_count"]
        )
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def make_train_function(self, force=False):
        """Keras' `make_train_function`, with the optimizer's variables made first.

        On the TensorFlow backend Keras creates them while tracing the first
        step, and `tf.function` then traces the step a second time (it
        retraces a function that created variables): one trace instead of
        two, the first epoch ~2.5 s sooner at any size (tiny model: 10.0 s
        -> 7.4 s), the same weights.
        """
        if self.built and self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():  # where Keras would make them
                self.optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def _loss_parts(self, y, y_pred, sample_weight):
        return losses.masked_losses(
            y, y_pred, frame_loss=self.frame_loss,
            stop_pos_weight=self.stop_pos_weight, sample_weight=sample_weight,
        )

    # ------------------------------------------------------------------ #
    # Decoding.
    # ------------------------------------------------------------------ #
    def open_stream(self, stop=None, max_steps=None, jit_compile=False, sampler=None,
                    seed=None):
        """Opens a `sg.Stream`: state holder for step-by-step decoding.

        Args:
            stop: stop criteria for this stream; `None` uses the model's.
            max_steps: optional int in `[1, self.max_steps]`, a lower cap.
            jit_compile: compile the step with XLA.
            sampler: how frames are drawn (`sg.samplers`); `None` is
                `Greedy()`.
            seed: int (or one per row) for the stream's random numbers;
                `None` draws a fresh one, which the state carries.

        Returns:
            A `sg.Stream`.
        """
        return Stream(self, stop=stop, max_steps=max_steps, jit_compile=jit_compile,
                      sampler=sampler, seed=seed)

    def stream(self, inputs, stop=None, max_steps=None, jit_compile=False, sampler=None,
               seed=None):
        """Yields `Out[i]` for each input as soon as it is decoded.

        Args:
            inputs: any iterable of inputs, consumed lazily: each an array
                `(input_size,)` or `(B, input_size)`.
            stop, max_steps, jit_compile, sampler, seed: as in `open_stream`.

        Yields:
            For a 1-D input, an `np.ndarray (L_i, output_size)`; for a 2-D
            input, a list of `B` such arrays.
        """
        return self.open_stream(stop, max_steps, jit_compile, sampler, seed).feed(inputs)

    def decode(self, x, stop=None, lengths=None, max_steps=None, sampler=None, seed=None):
        """Decodes whole sequences, the outer loop running inside the graph.

        Row by row, the result equals what `stream` yields for the same
        inputs.

        Args:
            x: float array `(B, T, input_size)`.
            stop: stop criteria for this call; `None` uses the model's.
            lengths: optional int array `(B, T)` in `[0, max_steps]` that
                forces every `len(Out[i])` and ignores the stop criteria.
            max_steps: optional int in `[1, self.max_steps]`, a lower cap.
            sampler: how frames are drawn (`sg.samplers`); `None` is
                `Greedy()`. With a random sampler or `sg.StopSample`, the
                outer loop runs in Python over the compiled step.
            seed: an int (row `b` gets `randomness.derive_seed(seed, b)`,
                row 0 the seed itself, as record `b` of
                `sg.decode_sequences`) or one per row, as
                `open_stream(seed=...)`: row `b` equals a stream of that
                seed. `None` draws a fresh one.

        Returns:
            A `tf.RaggedTensor` of shape `(B, T, None, output_size)`.

        Raises:
            ValueError: for a wrong shape, non-finite values, or `lengths`
                outside `[0, max_steps]`.
        """
        return tf_runtime.decode(self, x, stop=stop, lengths=lengths, max_steps=max_steps,
                                 sampler=sampler, seed=seed)

    def export_litert(self, path, stop=None):
        """Writes a `.tflite` file of the outer step, for `sg.LiteStream`.

        The file holds one outer step (model_a's cell, then model_b's inner
        loop with the stop checks) with the state, the thresholds and the
        cap as inputs, in TFLite builtin ops only, and the metadata that
        `sg.LiteStream(path)` needs. Running it needs `numpy` and
        `ai-edge-litert`, not TensorFlow.

        Args:
            path: str or path-like, the file to write.
            stop: the stop criteria kinds to bake in (their thresholds stay
                adjustable); `None` uses the model's.

        Returns:
            The metadata stored in the file, a dict.

        Raises:
            ImportError: if `ai-edge-litert` is not installed.
        """
        from streamgen.runtimes import export

        return export.export_litert(self, path, stop=stop)

    # ------------------------------------------------------------------ #
    # Serialization.
    # ------------------------------------------------------------------ #
    def get_config(self):
        base_config = super().get_config()
        config = {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "ir_size": self.ir_size,
            "units": self.units,
            "cell": self.cell,
            "outer": _serialize_or_none(self.outer_cell, self._custom_outer),
            "inner": _serialize_or_none(self.inner_cell, self._custom_inner),
            "max_steps": self.max_steps,
            "decoder_state": self.decoder_state,
            "stop": [keras.saving.serialize_keras_object(c) for c in self._stop],
            "frame_loss": self.frame_loss,
            "stop_loss_weight": self.stop_loss_weight,
            "stop_pos_weight": self.stop_pos_weight,
            "mixtures": self.mixtures,
            "stop_network": self.stop_network,
        }
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("outer", "inner"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        config["stop"] = stopping.normalize_stop(config.get("stop", []))
        return cls(**config)


def _as_list(state):
    return list(state) if isinstance(state, (list, tuple)) else [state]


def _check_cell(name, cell):
    if not (hasattr(cell, "state_size") and callable(cell)):
        raise TypeError(
            f"Received an invalid value for argument `{name}`, expected a "
            "Keras RNN cell (an object with `state_size` and "
            f"`call(inputs, states)`), got {cell!r}."
        )
    return cell


def _state_sizes(cell):
    """`cell.state_size` as a list of ints."""
    sizes = cell.state_size
    sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
    return [int(s) for s in sizes]


def _probe_cell(name, cell, width, width_text, fix):
    """Runs `cell` once on zeros (building it); returns its output width.

    Args:
        width: the input width the cell gets here.
        width_text: how that width comes about, for the message.
        fix: callable, the cell's own input width -> the setting that fits.

    Raises:
        ValueError: naming the width expected, the cell's, and the fix.
    """
    states = [tf.zeros((1, s)) for s in _state_sizes(cell)]
    try:
        output, _ = cell(tf.zeros((1, width)), states)
    except Exception as error:  # any failure means "wrong cell for this place"
        kernel = getattr(cell, "kernel", None)
        own = None if kernel is None or len(kernel.shape) != 2 else int(kernel.shape[0])
        if own is not None and own != width:
            message = (f"Received an invalid value for argument `{name}`: the cell "
                       f"takes inputs of width {own}, but it gets {width_text} = "
                       f"{width} here; use {fix(own)}.")
        else:
            message = (f"Received an invalid value for argument `{name}`: the cell "
                       f"cannot take inputs of width {width} ({width_text}): "
                       f"{saving.first_line(saving.strip_ansi(str(error)))}")
        raise ValueError(message) from error
    return int(output.shape[-1])


def _serialize_or_none(cell, custom):
    return keras.saving.serialize_keras_object(cell) if custom else None
