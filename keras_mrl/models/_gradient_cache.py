"""The backend-neutral passes of a cached train step (GradCache).

Gao et al. (2021), "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup": an in-batch contrastive loss needs every embedding
of the batch at once, but its gradient with respect to the weights is the
sum over mini-batches of the embedder's vector-Jacobian product with that
mini-batch's rows of `d loss / d embeddings`. So a step

1. embeds the batch mini-batch by mini-batch, keeping no activations;
2. computes the loss on all embeddings and its gradient with respect to
   them (cheap: the embeddings are `(B, 2 + n, D)`);
3. embeds every mini-batch again, now with gradients, and pulls its rows of
   that gradient back into the weights.

Only one mini-batch's activations are alive at a time. Both embeddings of a
mini-batch must be the same, dropout included: each mini-batch runs with
the random seed states it had in pass 1 (`embed` maps every SeedGenerator
of the model to the state carried from one mini-batch to the next, as
successive calls would advance it).

This module is `keras.ops` only. The loop, the gradients and the train
step around them differ per backend: `keras_mrl.models._cached_step`.
"""

import keras
from keras import ops


def _static(value):
    """Whether `value` is a Python int (a shape known while tracing)."""
    return isinstance(value, int)


class MiniBatches:
    """The mini-batches of one batch of `(anchor, positive, *negatives)`.

    Mini-batch `k` holds rows `[start_k, start_k + size)` of every branch,
    where `start_k = min(k * size, batch - size)`: the last mini-batch of a
    batch that `size` does not divide is moved back to end at the last row,
    so every mini-batch has `size` rows (one traced shape). The rows it
    shares with the one before belong to it: pass 1 writes them last, and
    `owned` keeps the other mini-batch from pulling their gradient back a
    second time.

    Args:
        branches: list of the branches' inputs, each a tensor or a nest of
            tensors with the batch on axis 0.
        mini_batch_size: positive int; a batch of fewer rows is one
            mini-batch.
    """

    def __init__(self, branches, mini_batch_size):
        self.branches = branches
        first = keras.tree.flatten(branches)[0]
        self.batch = ops.shape(first)[0]
        if _static(self.batch):
            self.size = min(mini_batch_size, self.batch)
            self.count = -(-self.batch // self.size)
        else:
            self.size = ops.minimum(mini_batch_size, self.batch)
            self.count = (self.batch + self.size - 1) // self.size

    def start(self, k):
        return ops.minimum(k * self.size, self.batch - self.size)

    def inputs(self, k):
        """The branches' rows of mini-batch `k`."""
        start = self.start(k)

        def rows(leaf):
            shape = ops.shape(leaf)
            return ops.slice(
                leaf, [start] + [0] * (len(shape) - 1), [self.size, *shape[1:]]
            )

        return keras.tree.map_structure(rows, self.branches)

    def rows(self, tensor, k):
        """Rows of mini-batch `k` of a `(batch, ...)` tensor."""
        shape = ops.shape(tensor)
        return ops.slice(
            tensor,
            [self.start(k)] + [0] * (len(shape) - 1),
            [self.size, *shape[1:]],
        )

    def owned(self, k):
        """`(size,)` bools: the rows whose embedding mini-batch `k` gave."""
        rows = self.start(k) + ops.arange(self.size)
        return ops.logical_or(
            ops.equal(k, self.count - 1), rows < self.batch - self.size
        )

    def place(self, buffer, k, values):
        """`buffer` with rows of mini-batch `k` replaced by `values`."""
        starts = [self.start(k)] + [0] * (len(ops.shape(buffer)) - 1)
        return ops.slice_update(buffer, starts, values)


def seed_variables(model):
    """The state variables of every SeedGenerator of `model`'s layers.

    `Layer.variables` lists them and `Layer.weights` does not.
    """
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def check_cacheable(model):
    """Raises a ValueError for a model whose loss GradCache cannot split.

    A weight regularizer adds a loss that depends on the weights only,
    which the cached embedding gradient does not carry.
    """
    regularized = [
        v.path
        for v in model.trainable_variables
        if getattr(v, "regularizer", None) is not None
    ]
    if regularized:
        raise ValueError(
            "ContrastiveModel(mini_batch_size=...) back-propagates the "
            "gradient of the loss with respect to the embeddings only, so "
            "it cannot train weights with a regularizer: "
            f"{regularized}. Remove the regularizers (an optimizer's "
            "`weight_decay` regularises without a loss term), or pass "
            "mini_batch_size=None."
        )


def embed(model, inputs, seed_values, mapping=()):
    """Embeds the branches `inputs` in training mode.

    Args:
        model: the `ContrastiveModel`.
        inputs: the branches of one mini-batch.
        seed_values: the states of `seed_variables(model)` to run with.
        mapping: `(variable, value)` pairs of the other variables to read
            (the state of a stateless step), or none to read them.

    Returns:
        `(embeddings, seed_values)`: the `(size, 2 + n, D)` embeddings and
        the seed states after the call.

    Raises:
        ValueError: when a layer adds a loss (an activity regularizer,
            `add_loss`) or updates a variable other than a seed state
            (BatchNormalization's moving statistics) while it embeds:
            neither can be split into mini-batches.
    """
    seeds = seed_variables(model)
    state = list(mapping) + list(zip(seeds, seed_values))
    with keras.StatelessScope(state_mapping=state, collect_losses=True) as s:
        before = dict(s.state_mapping)
        embeddings = model(inputs, training=True)
    if s.losses:
        raise ValueError(
            "ContrastiveModel(mini_batch_size=...) cannot train an embedder "
            "or head that adds losses while it embeds (an "
            "activity_regularizer, add_loss): a loss of one mini-batch's "
            "activations is not part of the cached embedding gradient. "
            "Remove them, or pass mini_batch_size=None."
        )
    seed_ids = {id(v) for v in seeds}
    updated = [
        v.path
        for v in model.variables
        if id(v) not in seed_ids
        and s.state_mapping.get(id(v)) is not before.get(id(v))
    ]
    if updated:
        raise ValueError(
            "ContrastiveModel(mini_batch_size=...) embeds each mini-batch "
            "twice and needs an embedder whose call updates no state, but "
            f"{updated} changed in a training call (BatchNormalization's "
            "moving statistics, for instance; its batch statistics would "
            "also be a mini-batch's). Freeze those layers (trainable=False) "
            "or pass mini_batch_size=None."
        )
    return embeddings, [s.get_current_value(v) for v in seeds]


def embed_all(model, batches, seed_values, loop, mapping=()):
    """Pass 1: every mini-batch's embeddings, without gradients.

    Returns:
        `(embeddings, seed_values)`: the `(batch, 2 + n, D)` embeddings and
        the seed states after the last mini-batch.
    """
    # The first mini-batch runs before the loop: it gives the buffer its
    # width and dtype, which the embedder may not declare.
    first, seed_values = embed(model, batches.inputs(0), seed_values, mapping)
    shape = ops.shape(first)
    buffer = ops.zeros((batches.batch, *shape[1:]), dtype=first.dtype)
    buffer = batches.place(buffer, 0, first)

    def body(k, carry):
        buffer, seed_values = carry
        values, seed_values = embed(
            model, batches.inputs(k), seed_values, mapping
        )
        return batches.place(buffer, k, values), seed_values

    return loop(1, batches.count, body, (buffer, list(seed_values)))


def backpropagate(
    model, batches, grad, seed_values, loop, vjp, primals, mapping=None
):
    """Pass 3: the weights' gradient, one mini-batch at a time.

    Args:
        model: the `ContrastiveModel`.
        batches: the `MiniBatches` of pass 1.
        grad: `(batch, 2 + n, D)`, the loss' gradient with respect to the
            embeddings of pass 1.
        seed_values: the seed states pass 1 started from.
        loop: the backend's `loop(lower, upper, body, init)`.
        vjp: the backend's `vjp(fn, primals, cotangent)`, which returns the
            gradient of `sum(fn(primals)[0] * cotangent)` with respect to
            the trainable weights, and `fn`'s second output.
        primals: what `vjp` differentiates `fn` at: the trainable
            variables, or their values in a stateless step.
        mapping: optional function of the primals' values to the
            `(variable, value)` pairs `embed` reads.

    Returns:
        `(gradients, seed_values)`: one gradient per trainable variable,
        and the seed states after the last mini-batch.
    """
    zeros = [ops.zeros(v.shape, v.dtype) for v in model.trainable_variables]

    def body(k, carry):
        gradients, seeds = carry
        inputs = batches.inputs(k)
        rows = batches.rows(grad, k)
        owned = ops.cast(batches.owned(k), rows.dtype)
        cotangent = rows * ops.reshape(owned, (-1,) + (1,) * (rows.ndim - 1))

        def forward(values):
            pairs = () if mapping is None else mapping(values)
            return embed(model, inputs, seeds, pairs)

        parts, seeds = vjp(forward, primals, cotangent)
        gradients = [
            total + ops.cast(part, total.dtype)
            for total, part in zip(gradients, parts)
        ]
        return gradients, seeds

    return loop(0, batches.count, body, (zeros, list(seed_values)))
