import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_mrl._validation import check_bool
from keras_mrl._validation import check_optional_int
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import check_positive_int
from keras_mrl.models._cached_step import train_step as cached_train_step

_NO_LABELS = (
    "ContrastiveModel needs no labels: its loss reads the stacked "
    "embeddings of (anchor, positive, *negatives) only. Pass the branches "
    "as `x`, e.g. fit((queries, documents)), and leave `y` None; got a "
    "`y` of type {}."
)


def _scalar_kind(value):
    """ "string", "number" or "None" for one value; None for anything else."""
    if value is None:
        return "None"
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return "string"
    if isinstance(value, (numbers.Number, np.bool_)):
        return "number"
    return None


def _branch_name(index):
    """`anchor`, `positive`, `negative_1`, ...: the dict key of a branch."""
    if index < 2:
        return ("anchor", "positive")[index]
    return f"negative_{index - 1}"


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
    if (
        isinstance(inputs, (tuple, list))
        and inputs
        and all(_scalar_kind(v) in ("string", "number") for v in inputs)
    ):
        what = (
            "strings"
            if all(_scalar_kind(v) == "string" for v in inputs)
            else "single values"
        )
        raise ValueError(
            "ContrastiveModel takes (anchor, positive, *negatives), each a "
            f"batch of inputs; got a {type(inputs).__name__} of "
            f"{len(inputs)} {what}, which is one branch. Pass the branches "
            "together, e.g. fit((queries, documents))."
        )
    if isinstance(inputs, (tuple, list)) and len(inputs) >= 2:
        return list(inputs)
    got = (
        f"a {type(inputs).__name__} of {len(inputs)} input(s)"
        if isinstance(inputs, (tuple, list))
        else type(inputs).__name__
    )
    raise ValueError(
        "ContrastiveModel takes (anchor, positive, *negatives): a tuple or "
        "list of at least 2 inputs, or a dict with the keys 'anchor' and "
        f"'positive'; got {got}."
    )


def _is_raw(x):
    """Whether `x` is branches in memory (not a dataset or a generator)."""
    return isinstance(x, (tuple, list, dict))


def _num_rows(branch):
    """The number of rows (examples) of a branch: an array, a tensor, a
    list or a dict of them (e.g. token ids and a padding mask)."""
    if isinstance(branch, dict):
        branch = keras.tree.flatten(branch)[0]
    shape = getattr(branch, "shape", None)
    if shape is not None and len(shape):
        return shape[0]
    return len(branch)


def _check_branch(branch, name):
    """Returns `branch`, a list (or object array) as a numpy array, after
    checking that its rows are all strings or all not strings.

    numpy would turn `["a", 1]` into strings, and a None into an object
    that no tensor holds.
    """
    if isinstance(branch, (list, tuple)):
        values = list(branch)
    elif isinstance(branch, np.ndarray) and branch.dtype == object:
        values = branch.ravel().tolist()
    else:
        return branch
    kinds = [_scalar_kind(v) for v in values]
    if "None" in kinds:
        row = kinds.index("None")
        raise ValueError(
            f"{name} holds None at row {row}: every row must be an input "
            "of the embedder (a string for a text embedder)."
        )
    if "string" in kinds and any(kind != "string" for kind in kinds):
        row = next(i for i, kind in enumerate(kinds) if kind != "string")
        raise TypeError(
            f"{name} mixes strings with other values: row {row} is "
            f"{values[row]!r} of type {type(values[row]).__name__}. Every "
            "row of a branch must be a string, or none."
        )
    if kinds and all(kind is not None for kind in kinds):
        return np.asarray(values).reshape(np.shape(branch))
    return branch


def _checked_inputs(x):
    """Checks in-memory branches; returns them with lists as numpy arrays.

    Raises:
        ValueError: for a structure that is not (anchor, positive,
            *negatives), a None row, branches of different lengths or of
            no rows.
        TypeError: for a branch mixing strings with other values, or
            branches of strings beside branches of numbers.
    """
    branches = _branches(x)
    names = [f"Branch {i} (`{_branch_name(i)}`)" for i in range(len(branches))]
    branches = [_check_branch(b, n) for b, n in zip(branches, names)]
    lengths = [_num_rows(b) for b in branches]
    if len(set(lengths)) > 1:
        raise ValueError(
            "The branches of ContrastiveModel must hold one row per example "
            "each, the same number, got "
            + ", ".join(f"{n} {k}" for n, k in zip(names, lengths))
            + "."
        )
    if lengths[0] == 0:
        raise ValueError(
            "The branches of ContrastiveModel hold no rows: there is "
            "nothing to embed."
        )
    strings = [_holds_strings(b) for b in branches]
    if any(strings) and not all(strings):
        text = names[strings.index(True)]
        other = names[strings.index(False)]
        raise TypeError(
            f"{other} holds no strings while {text} does: every branch "
            "goes through the same embedder, so all hold text or none do."
        )
    if isinstance(x, dict):
        return dict(
            zip([_branch_name(i) for i in range(len(branches))], branches)
        )
    return tuple(branches)


def _check_validation_split(validation_split):
    message = (
        "`validation_split` must be a float in [0, 1), the fraction of "
        f"rows held out, got {validation_split!r}."
    )
    if isinstance(validation_split, (bool, np.bool_)) or not isinstance(
        validation_split, numbers.Real
    ):
        raise TypeError(message)
    if not 0 <= validation_split < 1:
        raise ValueError(message)
    return float(validation_split)


def _split(branches, validation_split):
    """`(train, validation)`: the last `validation_split` of the rows held
    out, as Keras holds them out of arrays."""
    size = _num_rows(_branches(branches)[0])
    cut = int(math.floor(size * (1.0 - validation_split)))
    if cut in (0, size):
        raise ValueError(
            f"`validation_split`={validation_split} of {size} rows leaves "
            f"{cut} for training and {size - cut} for validation; both need "
            "at least 1."
        )

    def take(rows):
        def rows_of(branch):
            # A branch may be a dict of arrays (token ids, padding mask).
            if isinstance(branch, dict):
                return {k: v[rows] for k, v in branch.items()}
            return branch[rows]

        if isinstance(branches, dict):
            return {k: rows_of(v) for k, v in branches.items()}
        return tuple(rows_of(b) for b in branches)

    return take(slice(0, cut)), take(slice(cut, size))


def _validation_branches(validation_data):
    """The branches of `fit`'s `validation_data`.

    It takes the branches themselves, `(anchors, positives)` as `x` takes
    them, or Keras' packing `((anchors, positives),)`, whose `y` must then
    be None.
    """
    packed = (
        isinstance(validation_data, tuple)
        and validation_data
        and (
            isinstance(validation_data[0], tuple)
            or (
                isinstance(validation_data[0], dict)
                and "anchor" in validation_data[0]
            )
        )
    )
    if not packed:
        return validation_data
    x, y, _ = keras.utils.unpack_x_y_sample_weight(validation_data)
    if y is not None:
        raise ValueError(_NO_LABELS.format(type(y).__name__))
    return x


def _is_string(value):
    dtype = getattr(value, "dtype", None)
    return dtype is not None and "string" in str(dtype)


def _holds_strings(x):
    if x is None:
        return False
    spec = getattr(x, "element_spec", None)
    leaves = keras.tree.flatten(spec if spec is not None else x)
    return any(
        _is_string(leaf)
        or isinstance(leaf, (str, bytes))
        or (isinstance(leaf, np.ndarray) and leaf.dtype.kind in "USO")
        for leaf in leaves
    )


@keras.saving.register_keras_serializable(package="keras_mrl")
class ContrastiveModel(keras.Model):
    """Trains an embedding model on (anchor, positive, negatives) inputs.

    The model embeds every branch of its input with the same `embedder`
    (shared weights) and stacks the embeddings into `(B, 2 + n, D)`, what
    `keras_mrl.losses.MultipleNegativesRankingLoss` reads, alone or inside
    `keras_mrl.losses.MatryoshkaLoss(..., nesting_dims=...)`. No labels are
    needed:
    `fit(x)` trains. The embedder object itself is trained, so after `fit`
    it is the fine-tuned model, to use, save or `save_to_preset` as usual.

    An embedder with a `preprocessor` (a KerasHub `TextEmbedder`, for
    instance) takes raw strings: `fit`, `evaluate` and `predict` then build
    a `tf.data` pipeline that applies the preprocessor to every branch, as
    KerasHub tasks do, so the compiled step only sees token ids. Any other
    Keras model from tensors to `(B, D)` gets its inputs as they are.

    Branches in memory (lists, arrays, tensors) are checked before any of
    them is embedded, with one message whatever the embedder: they must
    be equally long and not empty, and a branch holds strings in every row
    or in none. `fit` and `evaluate` take no `y`, and `validation_split`
    holds out the last rows of any branches, raw strings included.

    An optional `head` layer (for instance
    `keras_mrl.layers.OrthogonalProjection`) is applied to every embedding
    after the embedder; `encode` runs both. The head lives in this model
    (and its `.keras` file), not in the embedder's preset.

    `mini_batch_size` caches the in-batch negatives (GradCache, Gao et
    al., 2021), so that the batch, and with it the number of negatives,
    can grow beyond what fits in memory at once. A train step then embeds
    the batch `mini_batch_size` rows at a time without gradients, computes
    the compiled loss on all the embeddings and its gradient with respect
    to them, then embeds each mini-batch again with gradients and
    back-propagates its rows of that gradient into the embedder and the
    head, and applies the optimizer once. The gradient, the loss logged
    and the metrics are those of the uncached step on the same batch, for
    any loss of the stacked embeddings, while the activations of one
    mini-batch (`mini_batch_size` rows of every branch) are alive at a
    time. Each mini-batch embeds twice with the same dropout masks. It
    costs one more forward pass of the embedder. `evaluate` and `predict`
    embed whole batches, without gradients. Layers whose call adds a loss
    or updates a state (BatchNormalization), and weight regularizers,
    raise a ValueError, since their terms do not split into mini-batches.

    Args:
        embedder: a Keras model mapping one input batch to `(B, D)`.
        head: optional Keras layer applied to the embeddings.
        mini_batch_size: None (the default) to embed a batch at once with
            gradients, or a positive int, the rows of every branch that a
            cached step embeds at a time; a batch of fewer rows is one
            mini-batch, and one it does not divide ends with a mini-batch
            that overlaps the one before.
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
    ...     loss=keras_mrl.losses.MatryoshkaLoss(
    ...         keras_mrl.losses.MultipleNegativesRankingLoss(),
    ...         nesting_dims=[2, 4],
    ...     ),
    ... )
    >>> anchors = np.random.default_rng(0).normal(size=(8, 6))
    >>> positives = anchors + 0.1
    >>> history = model.fit((anchors, positives), batch_size=4, verbose=0)
    >>> tuple(model.predict((anchors, positives), verbose=0).shape)
    (8, 2, 4)

    The same training, 8 pairs a step embedded 2 pairs at a time:

    >>> cached = keras_mrl.models.ContrastiveModel(encoder, mini_batch_size=2)
    >>> cached.compile(optimizer="adam", loss=model.loss)
    >>> history = cached.fit((anchors, positives), batch_size=8, verbose=0)
    >>> cached.mini_batch_size
    2
    """

    def __init__(self, embedder, *, head=None, mini_batch_size=None, **kwargs):
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
        self.mini_batch_size = check_optional_positive_int(
            mini_batch_size, "mini_batch_size"
        )
        width = self._embedder_width()
        if head is not None and not head.built and width is not None:
            head.build((None, width))

    def _embedder_width(self):
        # A Sequential model knows its `outputs` before its first call.
        outputs = getattr(self.embedder, "outputs", None)
        if outputs:
            return outputs[0].shape[-1]
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

    def train_step(self, *args):
        if self.mini_batch_size is None:
            return super().train_step(*args)
        # JAX passes (state, data), the other backends (data).
        branches = _branches(keras.utils.unpack_x_y_sample_weight(args[-1])[0])
        return cached_train_step(self, branches, *args)

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

    def make_dataset(
        self,
        x,
        *,
        batch_size=32,
        shuffle=False,
        seed=None,
        drop_remainder=False,
    ):
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

        Raises:
            ValueError: for a `batch_size` below 1, or branches that are
                not (anchor, positive, *negatives) of equal, non-zero
                lengths without None rows.
            TypeError: for a non-bool `shuffle` or `drop_remainder`, a
                non-int `seed`, or a branch mixing strings with other
                values.
        """
        import tensorflow as tf

        batch_size = check_positive_int(batch_size, "batch_size")
        shuffle = check_bool(shuffle, "shuffle")
        seed = check_optional_int(seed, "seed")
        drop_remainder = check_bool(drop_remainder, "drop_remainder")
        if not isinstance(x, tf.data.Dataset):
            x = _checked_inputs(x)
            size = _num_rows(_branches(x)[0])
            x = tf.data.Dataset.from_tensor_slices((x,))
            if shuffle:
                x = x.shuffle(size, seed=seed, reshuffle_each_iteration=True)
            x = x.batch(batch_size, drop_remainder=drop_remainder)
        return x.map(
            self._unpack_element, num_parallel_calls=tf.data.AUTOTUNE
        ).prefetch(tf.data.AUTOTUNE)

    def _pipeline(self, x, batch_size, shuffle=False):
        """`(x, batch_size)` for Keras: in-memory branches checked, and
        raw strings preprocessed in a batched dataset."""
        if not _is_raw(x):
            return x, batch_size
        x = _checked_inputs(x)
        # Only raw strings are preprocessed: token ids made elsewhere go to
        # Keras as they are.
        if self.preprocessor is None or not _holds_strings(x):
            return x, batch_size
        seed = int(np.random.randint(2**31)) if shuffle else None
        return self.make_dataset(
            x, batch_size=batch_size or 32, shuffle=shuffle, seed=seed
        ), None

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        **kwargs,
    ):
        """Trains on `(anchor, positive, *negatives)`; see `keras.Model.fit`.

        Takes no `y`. `validation_split` holds out the last rows of
        in-memory branches (raw strings included), as Keras holds them out
        of arrays. `validation_data` takes branches as `x` does, or Keras'
        `((anchors, positives),)`.

        Raises:
            ValueError: for a `y`, a `batch_size` below 1, a
                `validation_split` outside [0, 1) or with a dataset or
                with `validation_data`, or branches as `make_dataset`
                rejects them.
            TypeError: for a non-bool `shuffle`, a `validation_split`
                that is not a number, or a branch mixing strings with
                other values.
        """
        if y is not None:
            raise ValueError(_NO_LABELS.format(type(y).__name__))
        batch_size = check_optional_positive_int(batch_size, "batch_size")
        shuffle = check_bool(shuffle, "shuffle")
        validation_split = _check_validation_split(validation_split)
        if validation_split:
            if validation_data is not None:
                raise ValueError(
                    "Pass `validation_split` or `validation_data`, not both."
                )
            if not _is_raw(x):
                raise ValueError(
                    "`validation_split` holds out rows of in-memory branches "
                    f"(arrays or lists), not of a {type(x).__name__}: pass "
                    "`validation_data` instead."
                )
            x, validation_data = _split(_checked_inputs(x), validation_split)
        branches, train_batch_size = self._pipeline(x, batch_size, shuffle)
        if _is_raw(x) and not _is_raw(branches):
            # The pipeline shuffled already; Keras cannot shuffle a dataset.
            shuffle = False
        if validation_data is not None:
            # Validated in batches of Keras' size, in- or outside a dataset.
            validation_data, _ = self._pipeline(
                _validation_branches(validation_data),
                kwargs.get("validation_batch_size") or batch_size,
            )
            if _is_raw(validation_data):
                # Keras would read a pair of branches as (x, y).
                validation_data = (validation_data,)
        return super().fit(
            branches,
            None,
            batch_size=train_batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_data=validation_data,
            shuffle=shuffle,
            **kwargs,
        )

    def evaluate(self, x=None, y=None, batch_size=None, *args, **kwargs):
        if y is not None:
            raise ValueError(_NO_LABELS.format(type(y).__name__))
        batch_size = check_optional_positive_int(batch_size, "batch_size")
        x, batch_size = self._pipeline(x, batch_size)
        return super().evaluate(x, None, batch_size, *args, **kwargs)

    def predict(self, x, batch_size=None, *args, **kwargs):
        batch_size = check_optional_positive_int(batch_size, "batch_size")
        x, batch_size = self._pipeline(x, batch_size)
        return super().predict(x, batch_size, *args, **kwargs)

    def encode(self, x, *, batch_size=32, verbose=0):
        """Embeds one batch of inputs with the embedder, then the head.

        Args:
            x: inputs of the embedder (raw strings with a preprocessor).
            batch_size: int, the `predict` batch size.
            verbose: `predict`'s verbosity.

        Returns:
            A numpy array `(N, D)`; a float32 `(0, D)` for no inputs.

        Raises:
            ValueError: for a `batch_size` below 1, a None row, or no
                inputs when the embedding width is unknown.
            TypeError: for inputs mixing strings with other values.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        x = _check_branch(x, "`x`")
        if _num_rows(x) == 0:
            return np.zeros((0, self._output_width()), "float32")
        embeddings = self.embedder.predict(
            x, batch_size=batch_size, verbose=verbose
        )
        if self.head is None:
            return np.asarray(embeddings)
        return ops.convert_to_numpy(self.head(embeddings))

    def _output_width(self):
        """The width `D` of `encode`'s embeddings, after the head."""
        width = self._embedder_width()
        if self.head is not None and width is not None:
            width = self.head.compute_output_shape((None, width))[-1]
        if width is None:
            raise ValueError(
                "encode() got no inputs and cannot tell the embedding width: "
                "the embedder's output shape is unknown. Build the embedder "
                "(e.g. call it once) first."
            )
        return width

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "embedder": keras.saving.serialize_keras_object(self.embedder),
                "head": (
                    None
                    if self.head is None
                    else keras.saving.serialize_keras_object(self.head)
                ),
                "mini_batch_size": self.mini_batch_size,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        embedder = keras.saving.deserialize_keras_object(config.pop("embedder"))
        head = config.pop("head", None)
        if head is not None:
            head = keras.saving.deserialize_keras_object(head)
        return cls(embedder, head=head, **config)
