"""2D Matryoshka: the embeddings of a text embedder's first k layers.

`DepthSampling` configures `ContrastiveModel` to train, besides the full
depth, one shallower depth a step; `LayerwiseEmbedder` computes the
embeddings of every depth from one pass through the backbone; and
`truncate_layers` cuts an embedder to its first k layers for serving.
"""

import keras
from keras import ops

from keras_mrl._validation import check_loss_weight
from keras_mrl._validation import check_optional_int
from keras_mrl._validation import check_positive_float
from keras_mrl._validation import check_positive_int
from keras_mrl.losses._similarity import prefix_similarities

# KerasHub text embedders whose output is their backbone's last sequence
# output, pooled with the padding mask and optionally normalised, with
# nothing between the last transformer layer and the pooling: post-norm
# encoders, so the output of layer k is what a k-layer model pools.
_FAMILIES = ("BertTextEmbedder", "XLMRobertaTextEmbedder")


def _family_names():
    return ", ".join(f"keras_hub.models.{name}" for name in _FAMILIES)


def _supported_classes():
    try:
        import keras_hub
    except ImportError:
        return ()
    return tuple(getattr(keras_hub.models, name) for name in _FAMILIES)


def transformer_layers(embedder, what):
    """The transformer layers of `embedder`'s backbone, after checking it.

    Raises:
        TypeError: for an embedder that is not of a supported family.
    """
    supported = _supported_classes()
    backbone = getattr(embedder, "backbone", None)
    layers = getattr(backbone, "transformer_layers", None)
    if not supported or not isinstance(embedder, supported) or not layers:
        raise TypeError(
            f"{what} reads the transformer layers of a KerasHub text "
            "embedder's backbone, and knows the embedders that pool the "
            "last layer's sequence output directly: "
            f"{_family_names()}. Got a {type(embedder).__name__}, whose "
            "layers it cannot take apart."
        )
    return list(layers)


def _pool(sequence, padding_mask, mode, normalize):
    """The embedder's pooling of one sequence output `(B, T, H)`: "mean",
    "cls" or "max", the modes both families take."""
    if mode == "cls":
        pooled = sequence[:, 0, :]
    elif mode == "max":
        mask = ops.expand_dims(ops.cast(padding_mask, "bool"), -1)
        fill = ops.cast(float("-inf"), sequence.dtype)
        pooled = ops.max(ops.where(mask, sequence, fill), axis=1)
    else:
        mask = ops.cast(ops.expand_dims(padding_mask, -1), sequence.dtype)
        total = ops.sum(sequence * mask, axis=1)
        pooled = total / ops.maximum(ops.sum(mask, axis=1), 1e-9)
    if normalize:
        pooled = ops.nn.normalize(pooled, axis=-1, order=2)
    return pooled


class LayerwiseEmbedder:
    """The embeddings of every depth of a text embedder, in one pass.

    A plain object, not a Keras layer: it holds a functional model that
    shares the backbone's layers and weights (they belong to the embedder,
    which the ContrastiveModel tracks and saves) and maps the backbone's
    inputs to each transformer layer's sequence output.

    `pending` carries the stacked embeddings of the depth drawn in the last
    training call to the loss of the same step.
    """

    def __init__(self, embedder):
        layers = transformer_layers(
            embedder, "ContrastiveModel(depth_sampling=...)"
        )
        if len(layers) < 2:
            raise ValueError(
                "ContrastiveModel(depth_sampling=...) trains the depths "
                "below the full one, and the embedder's backbone has "
                f"num_layers={len(layers)}: it needs at least 2 layers."
            )
        backbone = embedder.backbone
        self._sequences = keras.Model(
            backbone.input, [layer.output for layer in layers]
        )
        self._mode = embedder.pooling_mode
        self._normalize = embedder.normalize
        self.pending = None

    def embed(self, branches, depth_sampling, head, training):
        """Returns the stacked full-depth embeddings `(B, 2 + n, D)`.

        The embeddings of the depth `depth_sampling` draws, the same for
        every branch, are left in `pending`.
        """
        per_branch = [
            self._sequences(branch, training=training) for branch in branches
        ]
        per_depth = [list(depth) for depth in zip(*per_branch)]
        drawn = depth_sampling(per_depth, training=True)

        def finish(sequence, branch):
            embedding = _pool(
                sequence, branch["padding_mask"], self._mode, self._normalize
            )
            return (
                embedding
                if head is None
                else head(embedding, training=training)
            )

        full = [finish(s[-1], b) for s, b in zip(per_branch, branches)]
        shallow = [finish(s, b) for s, b in zip(drawn, branches)]
        self.pending = ops.stack(shallow, axis=1)
        return ops.stack(full, axis=1)

    def loss_terms(
        self, compiled_loss, y, y_pred, sample_weight, depth_sampling
    ):
        """The shallow depth's weighted loss and KL term; clears `pending`."""
        shallow, self.pending = self.pending, None
        total = None
        if depth_sampling.weight:
            loss = compiled_loss(y, shallow, sample_weight)
            total = depth_sampling.weight * loss
        if depth_sampling.kl_weight:
            kl = _SimilarityKL(depth_sampling.kl_temperature)(
                ops.stop_gradient(y_pred), shallow, sample_weight
            )
            kl = depth_sampling.kl_weight * kl
            total = kl if total is None else total + ops.cast(kl, total.dtype)
        return total


def _log_similarity_distribution(stacked, temperature):
    """Each anchor's log-softmax over the in-batch candidates' cosines."""
    candidates = [stacked[:, 1, :]]
    if stacked.shape[1] > 2:
        width = stacked.shape[-1]
        candidates.append(ops.reshape(stacked[:, 2:, :], (-1, width)))
    ((_, matrices),) = prefix_similarities(
        stacked[:, 0, :], candidates, scale=1.0 / temperature
    )
    return ops.log_softmax(ops.concatenate(matrices, axis=1), axis=1)


class _SimilarityKL(keras.losses.Loss):
    """Per anchor, KL(y_true || y_pred) of the softmaxes over the in-batch
    candidates of `cosine / temperature`, for stacked `(B, 2 + n, D)`.

    A Keras loss, so that the sample weights, the reduction and the
    scaling of `tf.distribute` are those of the compiled loss beside it.
    """

    def __init__(self, temperature, **kwargs):
        super().__init__(name="similarity_kl", **kwargs)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        log_p = _log_similarity_distribution(y_true, self.temperature)
        log_q = _log_similarity_distribution(y_pred, self.temperature)
        return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=1)


@keras.saving.register_keras_serializable(package="keras_mrl")
class DepthSampling(keras.layers.Layer):
    """Trains the shallower depths of a text embedder too: 2D Matryoshka.

    Passed to `keras_mrl.models.ContrastiveModel(embedder,
    depth_sampling=...)`, it makes the pooled output of the embedder's
    first `k` transformer layers an embedding too, for `k = 1, ..., L - 1`
    (the output of the embedding layer is no depth). Each training step
    draws one `k` uniformly, embeds every branch once through the whole
    backbone, pools (and normalises, and passes through the model's
    `head`) both the last layer's output and layer `k`'s, and adds to the
    compiled loss of the full depth

        weight * loss(depth k) + kl_weight * KL(full || depth k)

    where `loss` is the same compiled loss (a
    `keras_mrl.losses.MatryoshkaLoss` trains every width at depth `k`
    too) and `KL` compares, per anchor, the softmax over the in-batch
    candidates of `cosine / kl_temperature` at the full depth (held fixed)
    with that at depth `k`. This is sentence-transformers'
    `AdaptiveLayerLoss` with `n_layers_per_step=1` and its uniform layer
    weighting (its `Matryoshka2dLoss` with a `MatryoshkaLoss` of every
    width), except that its KL term compares softmaxes over the
    coordinates of each embedding, and that it also samples the embedding
    layer's output.

    The draw comes from the layer's `keras.random.SeedGenerator`, whose
    state is a model variable, so it changes from step to step inside a
    compiled train step on every backend; `depth` holds the last drawn
    `k`. Serve a depth with `keras_mrl.models.truncate_layers`.

    Args:
        weight: number >= 0, the weight of the sampled depth's loss.
        kl_weight: number >= 0, the weight of the KL term; 0 (the
            default) leaves it out.
        kl_temperature: positive number, the temperature of the KL
            term's softmaxes over cosines.
        seed: optional int seed of the draws.
        **kwargs: base layer keyword arguments, such as `name`.

    Call arguments:
        inputs: a list of `L >= 2` structures of tensors, one per depth
            from the shallowest to the full one, all of the same structure
            and shapes.
        training: bool; with True the structure of a drawn depth below
            the full one, else the full depth's.

    Returns:
        The structure of one depth.

    Example:

    >>> import keras_hub
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sum",
    ...               "of", "the", "array", "sort", "a", "list"]
    >>> embedder = keras_hub.models.BertTextEmbedder(
    ...     keras_hub.models.BertBackbone(
    ...         vocabulary_size=len(vocabulary), num_layers=3, num_heads=2,
    ...         hidden_dim=16, intermediate_dim=32, max_sequence_length=8),
    ...     keras_hub.models.BertTextEmbedderPreprocessor(
    ...         keras_hub.models.BertTokenizer(vocabulary=vocabulary),
    ...         sequence_length=8))
    >>> model = keras_mrl.models.ContrastiveModel(
    ...     embedder,
    ...     depth_sampling=keras_mrl.models.DepthSampling(1.0, seed=0),
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_mrl.losses.MatryoshkaLoss(
    ...         keras_mrl.losses.MultipleNegativesRankingLoss(),
    ...         nesting_dims=[8, 16],
    ...     ),
    ... )
    >>> queries = ["sum of the array", "sort a list"]
    >>> documents = ["the sum of a array", "sort the list"]
    >>> history = model.fit((queries, documents), batch_size=2, verbose=0)
    >>> int(keras.ops.convert_to_numpy(model.depth_sampling.depth)) in (1, 2)
    True
    """

    def __init__(
        self,
        weight=1.0,
        *,
        kl_weight=0.0,
        kl_temperature=0.05,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight = check_loss_weight(weight, "weight")
        self.kl_weight = check_loss_weight(kl_weight, "kl_weight")
        if not self.weight and not self.kl_weight:
            raise ValueError(
                "DepthSampling with weight=0 and kl_weight=0 would train "
                "nothing at the sampled depth: give either a positive weight."
            )
        self.kl_temperature = check_positive_float(
            kl_temperature, "kl_temperature", "0.05"
        )
        self.seed = check_optional_int(seed, "seed")
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.depth = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="depth",
        )
        self.built = True

    def call(self, inputs, training=None):
        inputs = list(inputs)
        if len(inputs) < 2:
            raise ValueError(
                "DepthSampling draws among the depths below the full one "
                f"and got {len(inputs)} depth(s): pass at least 2."
            )
        if not training:
            return inputs[-1]
        index = keras.random.randint(
            (), 0, len(inputs) - 1, dtype="int32", seed=self.seed_generator
        )
        self.depth.assign(index + 1)
        return keras.tree.map_structure(
            lambda *depths: ops.take(ops.stack(depths[:-1]), index, axis=0),
            *inputs,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weight": self.weight,
                "kl_weight": self.kl_weight,
                "kl_temperature": self.kl_temperature,
                "seed": self.seed,
            }
        )
        return config


def truncate_layers(embedder, *, num_layers):
    """Returns a copy of a text embedder with its first layers only.

    The copy is of the embedder's class, with a backbone of the same
    config but `num_layers`, the weights of the embeddings and of the
    first `num_layers` transformer layers copied, and the same
    preprocessor object. It computes the pooled output of the first
    `num_layers` layers of the embedder, which
    `keras_mrl.models.DepthSampling` trains, and saves, loads and
    `save_to_preset`s as any embedder of its class. Cut its width with
    `keras_mrl.ops.truncate` to serve at `num_layers` layers and `m`
    dimensions.

    Args:
        embedder: a `keras_hub.models.BertTextEmbedder` or
            `keras_hub.models.XLMRobertaTextEmbedder`.
        num_layers: int from 1 to the embedder's number of layers.

    Returns:
        A new embedder of `embedder`'s class; `embedder` is not changed.

    Raises:
        TypeError: for another kind of embedder, or a `num_layers` that is
            not an int.
        ValueError: for a `num_layers` outside `[1, L]`.

    Example:

    >>> import keras_hub
    >>> vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sum",
    ...               "of", "the", "array", "sort", "a", "list"]
    >>> embedder = keras_hub.models.BertTextEmbedder(
    ...     keras_hub.models.BertBackbone(
    ...         vocabulary_size=len(vocabulary), num_layers=3, num_heads=2,
    ...         hidden_dim=16, intermediate_dim=32, max_sequence_length=8),
    ...     keras_hub.models.BertTextEmbedderPreprocessor(
    ...         keras_hub.models.BertTokenizer(vocabulary=vocabulary),
    ...         sequence_length=8))
    >>> small = keras_mrl.models.truncate_layers(embedder, num_layers=2)
    >>> type(small).__name__, small.backbone.num_layers
    ('BertTextEmbedder', 2)
    >>> vectors = small.encode_text(["sum of the array"], verbose=0)
    >>> tuple(keras_mrl.ops.truncate(vectors, dim=8).shape)
    (1, 8)
    """
    layers = transformer_layers(embedder, "truncate_layers")
    num_layers = check_positive_int(num_layers, "num_layers")
    if num_layers > len(layers):
        raise ValueError(
            f"`num_layers`={num_layers} exceeds the {len(layers)} "
            "transformer layers of the embedder: use a value from 1 to "
            f"{len(layers)}."
        )
    backbone = embedder.backbone
    config = backbone.get_config()
    config["num_layers"] = num_layers
    cut = type(backbone).from_config(config)
    for layer in cut.layers:
        if layer.weights:
            layer.set_weights(backbone.get_layer(layer.name).get_weights())
    config = embedder.get_config()
    config.update(backbone=cut, preprocessor=embedder.preprocessor)
    return type(embedder).from_config(config)
