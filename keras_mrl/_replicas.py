"""All-gathering a loss input across the replicas of a `tf.distribute` step.

Only TensorFlow runs a loss once per replica, on that replica's slice of
the global batch (`MirroredStrategy`, `TPUStrategy`, ...). JAX's
`keras.distribution` compiles one program over the global batch, so its
losses see every example already, and Keras' torch trainer has no
replicas. Hence the one backend branch here, and TensorFlow is imported on
the TensorFlow backend only.
"""

import keras


def _replica_context():
    """The `tf.distribute` replica context of a step on several replicas,
    or None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replicated():
    """Whether this runs in the step of one of several replicas."""
    return _replica_context() is not None


def gather_across_replicas(x):
    """Every replica's `x`, concatenated along axis 0 in replica order.

    The gradient of the result is summed over the replicas and each
    replica keeps the rows of its own `x` (`tf.distribute`'s `all_gather`):
    a loss term of replica `r` that reads the rows of replica `s` sends its
    gradient to `s`, whose embedder produced them.

    Args:
        x: a tensor with the examples on axis 0.

    Returns:
        The gathered tensor; `x` itself outside a step of several
        replicas.
    """
    context = _replica_context()
    if context is None:
        return x
    import tensorflow as tf

    # all_gather forgets the static shape, which the prefix split needs.
    return tf.ensure_shape(context.all_gather(x, axis=0), [None, *x.shape[1:]])
