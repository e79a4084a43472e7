import keras
from keras import ops

from keras_mrl._blocks import block_bounds
from keras_mrl._blocks import running_sums
from keras_mrl._blocks import split_blocks
from keras_mrl._initializers import independent
from keras_mrl._initializers import split_draw
from keras_mrl._validation import check_bool
from keras_mrl._validation import check_positive_int
from keras_mrl._validation import validate_nesting_dims
from keras_mrl.nesting import default_nesting_dims

# The arguments stored as Keras objects, each with its serializer.
_SERIALIZED = {
    "activation": keras.activations.serialize,
    "kernel_initializer": keras.initializers.serialize,
    "bias_initializer": keras.initializers.serialize,
    "kernel_regularizer": keras.regularizers.serialize,
    "bias_regularizer": keras.regularizers.serialize,
    "activity_regularizer": keras.regularizers.serialize,
    "kernel_constraint": keras.constraints.serialize,
    "bias_constraint": keras.constraints.serialize,
}


@keras.saving.register_keras_serializable(package="keras_mrl")
class MatryoshkaDense(keras.layers.Layer):
    """A dense head applied to every nested prefix of its input.

    This is the nested linear head of Matryoshka Representation Learning
    (Kusupati et al., 2022). For input features `x` of width `D` and widths
    `nesting_dims = [m_1, ..., m_G]`, granularity `g` is
    `activation(x[..., :m_g] @ W_g + b_g)`, computed from the first `m_g`
    features alone. All granularities come out stacked in one tensor, so a
    single `keras_mrl.losses.MatryoshkaLoss` and plain labels go into `compile`.

    With `tied=False` (MRL) every granularity owns a kernel of shape
    `(m_g, units)` and a bias. With `tied=True` (MRL-E) one kernel of shape
    `(m_G, units)` and one bias are shared, and granularity `g` reads the
    first `m_g` rows of the kernel. The tied head costs about one `Dense`:
    each disjoint block `x[..., m_{g-1}:m_g] @ W[m_{g-1}:m_g]` is multiplied
    once and the products are accumulated. The tied kernel is stored as one
    variable per block of rows (`kernel_blocks`, named `kernel_{start}_{end}`),
    so that no step copies the blocks out of one kernel; `kernel` reads
    them as one `(m_G, units)` tensor. A `kernel_regularizer` or
    `kernel_constraint` therefore applies to each block: the same for
    elementwise ones (L1, L2, `NonNeg`), per block of rows for norm
    constraints such as `MaxNorm`.

    Args:
        units: int, the width of each granularity's output (e.g. classes).
        nesting_dims: list of strictly increasing widths, or None for
            `keras_mrl.nesting.default_nesting_dims(D)` of the input width
            `D`. After build the attribute holds the widths in use.
        tied: bool, whether all granularities share one kernel and bias.
        activation: activation applied to every granularity's output.
        use_bias: bool, whether to add a bias.
        kernel_initializer: initializer of the kernels. A tied head's
            blocks start as one draw of a `(nesting_dims[-1], units)` kernel,
            split, so the head starts as a `Dense(units)` seeded alike;
            an untied head draws each width's kernel on its own, with its
            own fan-in, as one `Dense` per width would.
        bias_initializer: initializer of the biases, drawn the same way.
        kernel_regularizer: regularizer of the kernels.
        bias_regularizer: regularizer of the biases.
        activity_regularizer: regularizer of the output.
        kernel_constraint: constraint on the kernels.
        bias_constraint: constraint on the biases.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor of shape `(..., D)` with `D >= nesting_dims[-1]`.

    Returns:
        A tensor of shape `(..., G, units)` where `G = len(nesting_dims)`.

    Example:

    >>> head = keras_mrl.layers.MatryoshkaDense(10, nesting_dims=[8, 16, 32])
    >>> tuple(head(np.ones((4, 32))).shape)
    (4, 3, 10)
    >>> head.nesting_dims
    [8, 16, 32]
    >>> small = head.export(8)  # a plain Dense serving granularity 8
    >>> tuple(small(np.ones((4, 8))).shape)
    (4, 10)
    """

    def __init__(
        self,
        units,
        *,
        nesting_dims=None,
        tied=False,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = check_positive_int(units, "units")
        self.nesting_dims = (
            None
            if nesting_dims is None
            else list(validate_nesting_dims(nesting_dims))
        )
        self.tied = check_bool(tied, "tied")
        self.activation = keras.activations.get(activation)
        self.use_bias = check_bool(use_bias, "use_bias")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    def _resolve_dims(self, input_dim):
        if input_dim is None:
            raise ValueError(
                "MatryoshkaDense needs a known last input dimension, got "
                "None. Give the input a static feature width."
            )
        if self.nesting_dims is None:
            return default_nesting_dims(input_dim)
        return list(validate_nesting_dims(self.nesting_dims, input_dim))

    @property
    def kernel(self):
        """The tied kernel `(nesting_dims[-1], units)`, its blocks joined.

        A tensor read from `kernel_blocks`; assign to those to change it.
        """
        if not self.tied:
            raise AttributeError(
                "An untied MatryoshkaDense has one kernel per width: read "
                "`kernels`."
            )
        if not self.built:
            raise AttributeError(
                "MatryoshkaDense has no kernel before it is built."
            )
        return ops.concatenate(list(self.kernel_blocks), axis=0)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.nesting_dims = self._resolve_dims(input_dim)
        if self.tied:
            # One variable per block: slicing one kernel into its blocks
            # copied each of them at every step. The blocks start as one
            # draw of a `(nesting_dims[-1], units)` kernel, split: the head
            # starts
            # as the Dense it replaces.
            bounds = list(block_bounds(self.nesting_dims))
            initializers = split_draw(
                self.kernel_initializer,
                (self.nesting_dims[-1], self.units),
                bounds,
            )
            self.kernel_blocks = [
                self._add_kernel(f"kernel_{start}_{end}", end - start, init)
                for (start, end), init in zip(bounds, initializers)
            ]
            self.bias = self._add_bias("bias", self.bias_initializer)
        else:
            # Each width's kernel and bias is a draw of its own, with its
            # own fan-in, as one Dense per width would start.
            count = len(self.nesting_dims)
            self.kernels = [
                self._add_kernel(f"kernel_{m}", m, init)
                for m, init in zip(
                    self.nesting_dims,
                    independent(self.kernel_initializer, count),
                )
            ]
            self.biases = [
                self._add_bias(f"bias_{m}", init)
                for m, init in zip(
                    self.nesting_dims, independent(self.bias_initializer, count)
                )
            ]
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_dim}
        )

    def _add_kernel(self, name, rows, initializer):
        return self.add_weight(
            name=name,
            shape=(rows, self.units),
            initializer=initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def _add_bias(self, name, initializer):
        if not self.use_bias:
            return None
        return self.add_weight(
            name=name,
            shape=(self.units,),
            initializer=initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def call(self, inputs):
        if self.tied:
            # Each block is multiplied once; the running sums give every
            # granularity, so the cost is one Dense over the widest prefix.
            partials = [
                ops.matmul(x, w)
                for x, w in zip(
                    split_blocks(inputs, self.nesting_dims), self.kernel_blocks
                )
            ]
            outputs = ops.stack(list(running_sums(partials)), axis=-2)
            if self.use_bias:
                outputs = outputs + self.bias
        else:
            outputs = []
            for m, kernel, bias in zip(
                self.nesting_dims, self.kernels, self.biases
            ):
                out = ops.matmul(inputs[..., :m], kernel)
                if bias is not None:
                    out = out + bias
                outputs.append(out)
            outputs = ops.stack(outputs, axis=-2)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        dims = self._resolve_dims(input_shape[-1])
        return tuple(input_shape[:-1]) + (len(dims), self.units)

    def export(self, dim):
        """Returns a plain `keras.layers.Dense` that serves granularity `dim`.

        The returned layer is built for inputs of width `dim` and computes,
        on `x[..., :dim]`, what this head computes for width `dim`. A tied
        head serves any width from 1 to `nesting_dims[-1]`, also widths
        between the trained ones; an untied head serves its trained widths.

        Args:
            dim: int, the input width of the exported layer.

        Returns:
            A built `keras.layers.Dense(units)` with this head's activation.

        Raises:
            ValueError: for a width the head cannot serve.
        """
        if not self.built:
            raise ValueError(
                "MatryoshkaDense.export() needs a built layer; call the "
                "layer on data or build it first."
            )
        max_dim = self.nesting_dims[-1]
        dim = check_positive_int(dim, "dim")
        if self.tied:
            if not 1 <= dim <= max_dim:
                raise ValueError(
                    f"A tied MatryoshkaDense exports widths 1 to {max_dim}, "
                    f"got dim={dim}."
                )
            kernel = ops.convert_to_numpy(self.kernel)[:dim]
            bias = self.bias
        else:
            if dim not in self.nesting_dims:
                raise ValueError(
                    f"An untied MatryoshkaDense exports only its trained "
                    f"widths {list(self.nesting_dims)}, got dim={dim}. Use "
                    "one of "
                    "those, or train a tied head to serve any width."
                )
            g = self.nesting_dims.index(dim)
            kernel = ops.convert_to_numpy(self.kernels[g])
            bias = self.biases[g]
        dense = keras.layers.Dense(
            self.units,
            activation=self.activation,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name=f"{self.name}_{dim}",
        )
        dense.build((None, dim))
        dense.kernel.assign(kernel)
        if self.use_bias:
            dense.bias.assign(ops.convert_to_numpy(bias))
        return dense

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "nesting_dims": self.nesting_dims,
                "tied": self.tied,
                "use_bias": self.use_bias,
            }
        )
        for name, serialize in _SERIALIZED.items():
            config[name] = serialize(getattr(self, name))
        return config


def matryoshka_heads(model):
    """Returns the `MatryoshkaDense` layers of `model`, nested ones too."""
    # `_flatten_layers` is how Keras itself walks nested layers (also those
    # held as attributes of custom layers, which `model.layers` misses).
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, MatryoshkaDense)
    ]
