"""The softmax cross-entropy of a stacked head, in fewer passes.

`MatryoshkaLoss` scores a `MatryoshkaDense` output `(batch, G, classes)`
with one call of its inner loss. For Keras'
`SparseCategoricalCrossentropy(from_logits=True)`, the commonest, it
computes the same values as `logsumexp(z) - <one_hot(label), z>` instead.
Keras' JAX and torch backends take a full log-softmax and multiply it by
the one-hot labels, and its TensorFlow backend calls
`sparse_softmax_cross_entropy_with_logits`, which XLA lowers with a
gather; the one-hot product fuses into the reduction, and its gradient,
`softmax(z) - one_hot`, is one elementwise pass where a gather's is a
scatter. `benchmarks/head_variants.py` measured the difference (issue 13).
"""

import keras
from keras import ops


def is_sparse_logits_cross_entropy(loss):
    """Whether `loss` is a softmax cross-entropy of integer labels on logits
    that `sparse_logits_cross_entropy` computes exactly."""
    if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return False
    config = loss.get_config()
    return bool(config["from_logits"]) and config["ignore_class"] is None


def sparse_logits_cross_entropy(labels, logits):
    """Per-row softmax cross-entropy of integer `labels` and `logits`.

    Args:
        labels: class ids, the shape of `logits` without its last axis.
        logits: a float tensor `(..., classes)` with a static last axis.

    Returns:
        `logsumexp(logits) - logits[label]`, the shape of `labels`.
    """
    one_hot = ops.one_hot(
        ops.cast(labels, "int32"), logits.shape[-1], dtype=logits.dtype
    )
    return ops.logsumexp(logits, axis=-1) - ops.sum(one_hot * logits, axis=-1)
