"""Length buckets: each batch of token ids padded to one of a few lengths.

A KerasHub preprocessor pads every text to its `sequence_length`, so a
batch of short texts costs as much as a batch of long ones. Cutting each
batch to its longest text, as sentence-transformers does, would give XLA a
new shape, hence a new compilation, for almost every batch. A bucket is
the middle way: the batch is cut to the smallest of a few lengths that
holds its longest text, so at most one program per bucket is compiled.

Only trailing padding is cut (the columns after the last one that any row
of the batch uses), so right- and left-padded inputs both stay exact.
"""

import numbers

from keras_mrl._validation import check_positive_int

# The smallest bucket: shorter sequences save little and cost a compile.
_SMALLEST = 16


def resolve_buckets(length_buckets, sequence_length):
    """The sorted bucket lengths, or None to keep the preprocessor's padding.

    Args:
        length_buckets: "auto" (16, 32, 64, ... up to `sequence_length`),
            None (no buckets), or a sequence of positive ints.
        sequence_length: the preprocessor's padded length, or None when
            unknown; it is always the last bucket.

    Returns:
        A tuple of increasing ints, or None.
    """
    if length_buckets is None:
        return None
    if isinstance(length_buckets, str):
        if length_buckets != "auto":
            raise ValueError(
                "`length_buckets` must be 'auto', None or a list of "
                f"positive ints, got the string {length_buckets!r}."
            )
        if sequence_length is None:
            return None
        buckets, length = [], _SMALLEST
        while length < sequence_length:
            buckets.append(length)
            length *= 2
        return tuple(buckets) + (sequence_length,)
    if not isinstance(length_buckets, (list, tuple)) or not length_buckets:
        raise TypeError(
            "`length_buckets` must be 'auto', None or a non-empty list of "
            f"positive ints, got {length_buckets!r}."
        )
    buckets = []
    for value in length_buckets:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(
                "`length_buckets` must hold positive ints, got "
                f"{value!r} in {length_buckets!r}."
            )
        buckets.append(check_positive_int(int(value), "a length bucket"))
    if len(set(buckets)) != len(buckets):
        raise ValueError(
            f"`length_buckets` holds a length twice: {list(length_buckets)}."
        )
    buckets = sorted(buckets)
    if sequence_length is not None and buckets[-1] > sequence_length:
        raise ValueError(
            f"`length_buckets` {list(length_buckets)} goes beyond the "
            f"preprocessor's sequence_length {sequence_length}."
        )
    if sequence_length is not None and buckets[-1] < sequence_length:
        buckets.append(sequence_length)
    return tuple(buckets)


def trim(inputs, buckets):
    """Cuts the trailing padding of a preprocessed batch to a bucket.

    Args:
        inputs: a dict of `(batch, length, ...)` tensors with a
            `"padding_mask"` (KerasHub's preprocessor output); anything
            else is returned as it is.
        buckets: increasing bucket lengths from `resolve_buckets`.

    Returns:
        The dict with every entry cut to the bucket along axis 1.
    """
    # tf.data runs this, so it is TensorFlow whatever the Keras backend.
    import tensorflow as tf

    if not isinstance(inputs, dict) or "padding_mask" not in inputs:
        return inputs
    mask = tf.cast(inputs["padding_mask"], "int32")
    length = tf.shape(mask)[1]
    positions = tf.range(1, length + 1)
    used = tf.reduce_max(mask * positions[tf.newaxis, :])
    sizes = tf.constant(buckets, "int32")
    fits = tf.boolean_mask(sizes, sizes >= used)
    bucket = tf.minimum(
        tf.cond(tf.size(fits) > 0, lambda: tf.reduce_min(fits), lambda: length),
        length,
    )
    return {
        key: (
            value[:, :bucket]
            if len(value.shape) >= 2 and value.shape[1] == mask.shape[1]
            else value
        )
        for key, value in inputs.items()
    }
