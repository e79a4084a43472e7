import keras
import numpy as np
from keras import ops

from keras_mrl._validation import check_positive_int
from keras_mrl._validation import keyword_only


def _branches(inputs):
    """Returns the list `[anchor, positive, *negatives]` of a model input."""
    if isinstance(inputs, dict):
        if "anchor" not in inputs or "positive" not in inputs:
            raise ValueError(
                "A dict input of ContrastiveModel needs the keys 'anchor' and "
                "'positive' (then 'negative_1', 'negative_2', ...), got keys "
                f"{sorted(inputs)}."
            )
        negatives = [k for k in inputs if k not in ("anchor", "positive")]
        expected = [f"negative_{i}" for i in range(1, len(negatives) + 1)]
        if sorted(negatives) != sorted(expected):
            raise ValueError(
                "The hard negatives of a dict input must be keyed "
                f"{expected}, got {sorted(negatives)}."
            )
        return [inputs["anchor"], inputs["positive"]] + [
            inputs[k] for k in expected
        ]
    if isinstance(inputs, (tuple, list)) and len(inputs) >= 2:
        return list(inputs)
    raise ValueError(
        "ContrastiveModel takes (anchor, positive, *negatives): a tuple or "
        "list of at least 2 inputs, or a dict with the keys 'anchor' and "
        f"'positive'; got {type(inputs).__name__}"
        f"{'' if not isinstance(inputs, (tuple, list)) else len(inputs)}."
    )


def _is_string(value):
    dtype = getattr(value, "dtype", None)
    return dtype is not None and "string" in str(dtype)


def _holds_strings(x):
    if x is None:
        return False
    spec = getattr(x, "element_spec", None)
    leaves = keras.tree.flatten(spec if spec is not None else x)
    return any(
        _is_string(leaf) or isinstance(leaf, (str, bytes))
        or (isinstance(leaf, np.ndarray) and leaf.dtype.kind in "USO")
        for leaf in leaves
    )


@keras.saving.register_keras_serializable(package="keras_mrl")
class ContrastiveModel(keras.Model):
    """Trains an embedding model on (anchor, positive, negatives) inputs.

    The model embeds every branch of its input with the same `embedder`
    (shared weights) and stacks the embeddings into `(B, 2 + n, D)`, what
    `keras_mrl.losses.MultipleNegativesRankingLoss` reads, alone or inside
    `keras_mrl.MatryoshkaLoss(..., nesting_dims=...)`. No labels are needed:
    `fit(x)` trains. The embedder object itself is trained, so after `fit`
    it is the fine-tuned model, to use, save or `save_to_preset` as usual.

    An embedder with a `preprocessor` (a KerasHub `TextEmbedder`, for
    instance) takes raw strings: `fit`, `evaluate` and `predict` then build
    a `tf.data` pipeline that applies the preprocessor to every branch, as
    KerasHub tasks do, so the compiled step only sees token ids. Any other
    Keras model from tensors to `(B, D)` gets its inputs as they are.

    An optional `head` layer (for instance
    `keras_mrl.layers.OrthogonalProjection`) is applied to every embedding
    after the embedder; `encode` runs both. The head lives in this model
    (and its `.keras` file), not in the embedder's preset.

    Args:
        embedder: a Keras model mapping one input batch to `(B, D)`.
        head: optional Keras layer applied to the embeddings.
        **kwargs: `keras.Model` arguments, such as `name`.

    Call arguments:
        inputs: `(anchor, positive, *negatives)` as a tuple or list, or a
            dict with the keys `"anchor"`, `"positive"` and optionally
            `"negative_1"`, `"negative_2"`, ...; each entry is one batch
            of the embedder's input (raw strings with a preprocessor).
        training: bool, passed to the embedder and the head.

    Returns:
        A float tensor `(B, 2 + n, D)`.

    Example:

    >>> encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    >>> model = keras_mrl.models.ContrastiveModel(encoder)
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras_mrl.MatryoshkaLoss(
    ...         keras_mrl.losses.MultipleNegativesRankingLoss(),
    ...         nesting_dims=[2, 4],
    ...     ),
    ... )
    >>> anchors = np.random.default_rng(0).normal(size=(8, 6))
    >>> positives = anchors + 0.1
    >>> history = model.fit((anchors, positives), batch_size=4, verbose=0)
    >>> tuple(model.predict((anchors, positives), verbose=0).shape)
    (8, 2, 4)
    """

    @keyword_only
    def __init__(self, embedder, *, head=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(embedder, keras.Model):
            raise TypeError(
                "`embedder` must be a keras.Model mapping a batch to (B, D) "
                f"embeddings, got {type(embedder).__name__}."
            )
        if head is not None and not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"`head` must be None or a Keras layer, got "
                f"{type(head).__name__}."
            )
        self.embedder = embedder
        self.head = head
        width = self._embedder_width()
        if head is not None and not head.built and width is not None:
            head.build((None, width))

    def _embedder_width(self):
        try:
            return self.embedder.output.shape[-1]
        except (AttributeError, ValueError):
            return None

    @property
    def preprocessor(self):
        """The embedder's preprocessor, or None; applied to every branch."""
        return getattr(self.embedder, "preprocessor", None)

    def call(self, inputs, training=None):
        embeddings = []
        for branch in _branches(inputs):
            embedding = self.embedder(branch, training=training)
            if self.head is not None:
                embedding = self.head(embedding, training=training)
            embeddings.append(embedding)
        return ops.stack(embeddings, axis=1)

    def compute_output_shape(self, input_shape):
        shapes = _branches(input_shape)
        width = self._embedder_width()
        if self.head is not None and width is not None:
            width = self.head.compute_output_shape((None, width))[-1]
        return (None, len(shapes), width)

    # --- Raw inputs: the preprocessor runs in the tf.data pipeline. ---

    def preprocess_samples(self, x, y=None, sample_weight=None):
        """Applies the preprocessor to every branch of `x`.

        Args:
            x: `(anchor, positive, *negatives)` or their dict, of raw
                inputs.
            y: passed through.
            sample_weight: passed through.

        Returns:
            `(x, y, sample_weight)` packed as Keras packs them, with `x`
            preprocessed (unchanged without a preprocessor).
        """
        if self.preprocessor is not None:
            if isinstance(x, dict):
                x = {k: self.preprocessor(v) for k, v in x.items()}
            else:
                x = tuple(self.preprocessor(v) for v in _branches(x))
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _unpack_element(self, *element):
        # A dataset of raw pairs may yield the branches themselves, which
        # tf.data hands over as separate arguments.
        if len(element) == 1:
            return self.preprocess_samples(element[0])
        if len(element) >= 2 and all(_is_string(e) for e in element):
            return self.preprocess_samples(tuple(element))
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(element)
        return self.preprocess_samples(x, y, sample_weight)

    def make_dataset(self, x, *, batch_size=32, shuffle=False, seed=None,
                     drop_remainder=False):
        """Returns a batched `tf.data.Dataset` of preprocessed branches.

        Args:
            x: `(anchor, positive, *negatives)` (each a list or array of
                raw inputs) or their dict, or a `tf.data.Dataset` of them
                (already batched).
            batch_size: int, the batch size when `x` is not a dataset.
            shuffle: bool, whether to shuffle (every epoch) before batching.
            seed: optional int seed of the shuffle.
            drop_remainder: bool, whether to drop the last, smaller batch
                (a fixed batch shape avoids a second compilation).

        Returns:
            A `tf.data.Dataset` yielding the preprocessed inputs of `call`.
        """
        import tensorflow as tf

        batch_size = check_positive_int(batch_size, "batch_size")
        if not isinstance(x, tf.data.Dataset):
            if isinstance(x, (tuple, list)):
                x = tuple(np.asarray(v) if isinstance(v, list) else v
                          for v in _branches(x))
            else:
                _branches(x)
            size = len(next(iter(
                x.values() if isinstance(x, dict) else x)))
            x = tf.data.Dataset.from_tensor_slices((x,))
            if shuffle:
                x = x.shuffle(size, seed=seed, reshuffle_each_iteration=True)
            x = x.batch(batch_size, drop_remainder=drop_remainder)
        return x.map(
            self._unpack_element, num_parallel_calls=tf.data.AUTOTUNE
        ).prefetch(tf.data.AUTOTUNE)

    def _pipeline(self, x, batch_size, shuffle=False):
        # Only raw strings are preprocessed: a dataset from `make_dataset`,
        # or token ids made elsewhere, go to Keras as they are.
        if self.preprocessor is None or not _holds_strings(x):
            return x, batch_size
        seed = int(np.random.randint(2**31)) if shuffle else None
        return self.make_dataset(
            x, batch_size=batch_size or 32, shuffle=shuffle, seed=seed
        ), None

    def fit(self, x=None, y=None, batch_size=None, *args, shuffle=True,
            validation_data=None, **kwargs):
        if self.preprocessor is not None and y is not None:
            raise ValueError(
                "ContrastiveModel needs no labels: pass the branches as `x` "
                "and no `y`."
            )
        built = self._pipeline(x, batch_size, shuffle)
        if built[0] is not x:
            # The pipeline shuffled already; Keras cannot shuffle a dataset.
            shuffle = False
        x, batch_size = built
        if validation_data is not None and self.preprocessor is not None:
            validation_data, _ = self._pipeline(validation_data, None)
        return super().fit(
            x, y, batch_size, *args, shuffle=shuffle,
            validation_data=validation_data, **kwargs
        )

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        x, batch_size = self._pipeline(x, batch_size)
        return super().evaluate(x, y, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        x, batch_size = self._pipeline(x, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)

    def encode(self, x, *, batch_size=32, verbose=0):
        """Embeds one batch of inputs with the embedder, then the head.

        Args:
            x: inputs of the embedder (raw strings with a preprocessor).
            batch_size: int, the `predict` batch size.
            verbose: `predict`'s verbosity.

        Returns:
            A numpy array `(N, D)`.
        """
        embeddings = self.embedder.predict(
            x, batch_size=batch_size, verbose=verbose
        )
        if self.head is None:
            return np.asarray(embeddings)
        return ops.convert_to_numpy(self.head(embeddings))

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update({
            "embedder": keras.saving.serialize_keras_object(self.embedder),
            "head": (None if self.head is None
                     else keras.saving.serialize_keras_object(self.head)),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        embedder = keras.saving.deserialize_keras_object(
            config.pop("embedder")
        )
        head = config.pop("head", None)
        if head is not None:
            head = keras.saving.deserialize_keras_object(head)
        return cls(embedder, head=head, **config)
