"""Helpers for training Matryoshka heads on many devices.

- `matryoshka_layout_map` shards every `MatryoshkaDense` kernel over its
  `units` axis for `keras.distribution.ModelParallel` (large-vocabulary
  heads), with keys built from the model's real variable paths: a
  `LayoutMap` key that matches nothing silently replicates the variable.
- `check_global_batch` fails early, with the fix in the message, when the
  devices of a distribution cannot split the global batch evenly.
"""

import math
import re

import keras

from keras_mrl._validation import check_positive_int
from keras_mrl.layers._matryoshka_dense import matryoshka_heads

__all__ = ["check_global_batch", "matryoshka_layout_map"]


def matryoshka_layout_map(
    model, *, device_mesh, model_axis="model", layout_map=None
):
    """Returns a `LayoutMap` that shards the Matryoshka heads over `units`.

    Every kernel of every `keras_mrl.layers.MatryoshkaDense` in `model`
    (the blocks `kernel_{start}_{end}` of a tied head, `kernel_{m}` of an
    untied one) gets the layout
    `(None, model_axis)` and every bias `(model_axis,)`: each device holds
    a slice of the classes of every granularity, which is what a
    large-vocabulary head needs. Every other variable is left to the map
    (replicated unless `layout_map` already holds a rule for it).

    The keys are the escaped paths of the model's own variables, such as
    `^sequential/head/kernel_8$`: they match these variables and no other
    layer's. So the model that trains under the distribution must have the
    same variable paths as `model`: give the model and its heads explicit
    names, or rebuild the same model after `keras.backend.clear_session()`
    (which restarts the automatic names, and also resets the global dtype
    policy and distribution).

    Args:
        model: a built `keras.Model` (or layer) holding one or more
            `MatryoshkaDense` heads.
        device_mesh: the `keras.distribution.DeviceMesh` to shard over.
        model_axis: str, the name of the mesh axis that splits the units.
        layout_map: optional `keras.distribution.LayoutMap` on the same mesh
            to add the rules to (for rules of other layers).

    Returns:
        The `keras.distribution.LayoutMap`, for
        `keras.distribution.ModelParallel(layout_map=..., batch_dim_name=...)`.

    Raises:
        ValueError: when the model has no `MatryoshkaDense`, a head is not
            built, `model_axis` is not an axis of the mesh, or a head's
            `units` is not a multiple of that axis' size.

    Example:

    >>> mesh = keras.distribution.DeviceMesh(
    ...     (1, 2), ["batch", "model"], devices=["cpu:0", "cpu:1"]
    ... )
    >>> model = keras.Sequential(
    ...     [
    ...         keras.Input((16,)),
    ...         keras_mrl.layers.MatryoshkaDense(4, name="head"),
    ...     ],
    ...     name="net",
    ... )
    >>> layout_map = keras_mrl.distribution.matryoshka_layout_map(
    ...     model, device_mesh=mesh
    ... )
    >>> sorted(layout_map)
    ['^net/head/bias_16$', '^net/head/bias_8$', '^net/head/kernel_16$', \
'^net/head/kernel_8$']
    >>> layout_map["net/head/kernel_8"].axes
    (None, 'model')
    """
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a built keras.Model (or layer) holding "
            f"MatryoshkaDense heads, got {model!r}."
        )
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            "`device_mesh` must be a keras.distribution.DeviceMesh, got "
            f"{device_mesh!r}."
        )
    if model_axis not in device_mesh.axis_names:
        raise ValueError(
            f"`model_axis`={model_axis!r} is not an axis of the device mesh, "
            f"whose axes are {list(device_mesh.axis_names)}. Pass one of "
            "those, or build the mesh with a model axis."
        )
    shards = device_mesh.shape[list(device_mesh.axis_names).index(model_axis)]
    heads = matryoshka_heads(model)
    if not heads:
        raise ValueError(
            f"{model.name!r} holds no keras_mrl.layers.MatryoshkaDense, so "
            "there is no Matryoshka head to shard. Pass the model that "
            "contains the head."
        )
    if layout_map is None:
        layout_map = keras.distribution.LayoutMap(device_mesh)
    for head in heads:
        if not head.built:
            raise ValueError(
                f"MatryoshkaDense {head.name!r} is not built, so its variable "
                "paths are unknown. Build the model first (e.g. with a "
                "`keras.Input`) and then ask for its layout map."
            )
        if head.units % shards:
            raise ValueError(
                f"MatryoshkaDense {head.name!r} has units={head.units}, which "
                f"the {shards} devices of mesh axis {model_axis!r} cannot "
                f"split evenly. Use a multiple of {shards} units or a "
                "smaller model axis."
            )
        kernels = head.kernel_blocks if head.tied else head.kernels
        biases = [head.bias] if head.tied else head.biases
        for kernel in kernels:
            layout_map[f"^{re.escape(kernel.path)}$"] = (None, model_axis)
        for bias in biases:
            if bias is not None:
                layout_map[f"^{re.escape(bias.path)}$"] = (model_axis,)
    return layout_map


def _tf_strategy():
    """The enclosing `tf.distribute` strategy, or None.

    Kept apart because only the TensorFlow backend has strategies, and
    TensorFlow must not be imported on the others.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return None
    return tf.distribute.get_strategy()


def _replicas(distribution):
    """Returns `(number of batch shards, a name for the message)`."""
    if hasattr(distribution, "num_replicas_in_sync"):  # tf.distribute
        return distribution.num_replicas_in_sync, "replicas of " + type(
            distribution
        ).__name__
    name = type(distribution).__name__
    mesh = distribution.device_mesh
    if isinstance(distribution, keras.distribution.DataParallel):
        return math.prod(mesh.shape), f"devices of {name}"
    axis = distribution.batch_dim_name or mesh.axis_names[0]
    count = mesh.shape[list(mesh.axis_names).index(axis)]
    return count, f"devices of the {axis!r} mesh axis of {name}"


def check_global_batch(batch_size, *, distribution=None):
    """Checks that a distribution can split the global batch evenly.

    Data parallel training cuts every global batch into one equal slice per
    replica; XLA needs the slices to have the same static shape. This fails
    early, with the fix in the message, instead of deep in a compiled step.

    Args:
        batch_size: int, the global batch size (over all devices and hosts).
        distribution: a `keras.distribution.Distribution` (JAX), a
            `tf.distribute.Strategy`, or None for the current one:
            `keras.distribution.distribution()`, else on TensorFlow the
            strategy whose scope is open.

    Returns:
        The per-replica batch size (`batch_size` without a distribution).

    Raises:
        TypeError: when `batch_size` is not an int.
        ValueError: when `batch_size` is not positive or not a multiple of
            the number of replicas.

    Example:

    >>> data_parallel = keras.distribution.DataParallel(
    ...     devices=["cpu:0", "cpu:1", "cpu:2", "cpu:3"]
    ... )
    >>> keras_mrl.distribution.check_global_batch(
    ...     32, distribution=data_parallel
    ... )
    8
    >>> keras_mrl.distribution.check_global_batch(
    ...     30, distribution=data_parallel
    ... )
    Traceback (most recent call last):
        ...
    ValueError: global batch 30 is not divisible by the 4 devices of \
DataParallel; use a batch size that is a multiple of 4 (e.g. 28 or 32) and \
drop_remainder=True so that the last batch is full too.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if distribution is None:
        distribution = keras.distribution.distribution() or _tf_strategy()
    if distribution is None:
        return batch_size
    count, what = _replicas(distribution)
    if batch_size % count:
        lower = batch_size // count * count
        upper = lower + count
        examples = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"global batch {batch_size} is not divisible by the {count} "
            f"{what}; use a batch size that is a multiple of {count} (e.g. "
            f"{examples}) and drop_remainder=True so that the last batch is "
            "full too."
        )
    return batch_size // count
