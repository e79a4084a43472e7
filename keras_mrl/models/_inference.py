"""One batch through a model for inference, compiled with XLA.

`encode` embeds its texts a batch at a time through `predict_batch`,
which compiles the model's forward pass once per batch shape (the length
buckets bound them) and keeps the function beside the model:

- TensorFlow: a `tf.function` with `jit_compile=True`. Keras runs
  inference on a CPU without XLA by default, on TensorFlow's own kernels;
  XLA's code ran MiniLM's forward pass 1.6-2x faster on a CPU without
  oneDNN kernels and as fast or faster with them (docs/benchmarks.md,
  section 16).
- JAX on a CPU: a `jax.jit` with XLA's YNNPACK fusions off. jaxlib hands
  float32 matmuls to YNNPACK by default, and for the inference forward
  pass of a BERT encoder XLA's own code runs 1.4x faster at 256 tokens
  and 1.2x at 64 (same section). Training keeps the default: with
  YNNPACK its step is faster. XLA reads the option per compiled program,
  so only this one opts out.
- Elsewhere (torch; JAX under a distribution or on an accelerator, where
  Keras places the batch on its devices): `keras.Model.predict_on_batch`.

Under XLA a batch smaller than the caller's batch size is padded with
copies of its last row (`padded_rows`), so that any number of inputs
compiles a bounded number of programs per length.
"""

import weakref

import keras
import numpy as np

# XLA's option naming the kinds of fusion handed to YNNPACK; empty: none.
_YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
_forward_functions = weakref.WeakKeyDictionary()
_option_known = None


def padded_rows(rows, batch_size, ends_longer_call):
    """How many rows a batch of `rows` inputs is padded to under XLA.

    XLA compiles one program per batch shape. The last batch of a call
    that filled whole batches before it is padded to `batch_size`, the
    shape those compiled. A call of a single, smaller batch is padded to
    the next power of two: calls of any size then compile at most
    log2(batch_size) + 2 programs per length, and such a batch is less
    than half padding. The torch backend compiles nothing and pads
    nothing.

    Args:
        rows: int, the inputs in the batch, 1 to `batch_size`.
        batch_size: int, the caller's batch size.
        ends_longer_call: bool, whether whole batches came before this one.

    Returns:
        An int from `rows` to `batch_size`.
    """
    if keras.backend.backend() == "torch" or rows >= batch_size:
        return rows
    if ends_longer_call:
        return batch_size
    return min(batch_size, 1 << (rows - 1).bit_length())


def predict_batch(model, batch, rows=None):
    """`model(batch, training=False)` as a numpy array.

    Args:
        model: a `keras.Model`; a KerasHub task's preprocessor is not run,
            so `batch` holds what its backbone takes (token ids).
        batch: one batch of the model's inputs, numpy arrays.
        rows: optional int, the rows to pad the batch to (repeating its
            last row) before the forward pass; the padding's outputs are
            dropped. None: no padding.

    Returns:
        The model's output for `batch`, as numpy.
    """
    size = len(keras.tree.flatten(batch)[0])
    if rows is not None and rows > size:
        batch = keras.tree.map_structure(
            lambda v: np.concatenate([v, np.repeat(v[-1:], rows - size, 0)]),
            batch,
        )
        return _predict(model, batch)[:size]
    return _predict(model, batch)


def _predict(model, batch):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return np.asarray(_forward(model, _tensorflow_forward)(batch))
    if backend == "jax" and _own_jax_function():
        forward = _forward(model, _jax_forward)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return np.asarray(forward(trainable, non_trainable, batch))
    # keras.Model's own: a KerasHub task's would run its preprocessor
    # again on the token ids.
    return np.asarray(keras.Model.predict_on_batch(model, batch))


def _forward(model, build):
    if model not in _forward_functions:
        _forward_functions[model] = build(model)
    return _forward_functions[model]


def _tensorflow_forward(model):
    import tensorflow as tf

    # A weak reference: the function is the model's entry in a weak
    # dictionary, and a strong one would keep the model alive forever.
    model_ref = weakref.ref(model)

    def forward(batch):
        return model_ref()(batch, training=False)

    return tf.function(forward, jit_compile=True)


def _own_jax_function():
    import jax

    # Under a distribution, Keras' predict places the batch on its devices.
    return (
        jax.default_backend() == "cpu"
        and keras.distribution.distribution() is None
        and _ynn_option_known()
    )


def _ynn_option_known():
    """Whether this jaxlib's XLA takes the option (it is experimental)."""
    global _option_known
    if _option_known is None:
        import jax

        try:
            jax.jit(lambda x: x + 1, compiler_options={_YNN_FUSIONS: ""})(1.0)
            _option_known = True
        except jax.errors.JaxRuntimeError:
            _option_known = False
    return _option_known


def _jax_forward(model):
    import jax

    model_ref = weakref.ref(model)

    def forward(trainable, non_trainable, batch):
        outputs, _ = model_ref().stateless_call(
            trainable, non_trainable, batch, training=False
        )
        return outputs

    return jax.jit(forward, compiler_options={_YNN_FUSIONS: ""})
