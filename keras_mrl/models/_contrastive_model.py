import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_mrl._validation import check_bool
from keras_mrl._validation import check_dim
from keras_mrl._validation import check_optional_int
from keras_mrl._validation import check_optional_positive_int
from keras_mrl._validation import check_positive_int
from keras_mrl.losses import MatryoshkaLoss
from keras_mrl.models._cached_step import train_step as cached_train_step
from keras_mrl.models._depth import DepthSampling
from keras_mrl.models._depth import LayerwiseEmbedder
from keras_mrl.models._inference import padded_rows
from keras_mrl.models._inference import predict_batch
from keras_mrl.models._length_buckets import resolve_buckets
from keras_mrl.models._length_buckets import trim
from keras_mrl.ops import truncate

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


# Texts `encode` tokenizes before ordering them by token count, in
# batches: a window bounds the token ids held at once.
_ENCODE_WINDOW_BATCHES = 64


def _concatenate(batches):
    """One structure of numpy arrays from a list of same-structured ones."""
    return keras.tree.map_structure(
        lambda *values: np.concatenate(values), *batches
    )


def _longest_first(tokens):
    """The rows of a tokenized window, most tokens first (stable).

    Without a `"padding_mask"` (a preprocessor of another kind), the
    rows keep their order.
    """
    rows = len(keras.tree.flatten(tokens)[0])
    if not isinstance(tokens, dict) or "padding_mask" not in tokens:
        return np.arange(rows)
    mask = np.asarray(tokens["padding_mask"]).reshape(rows, -1)
    return np.argsort(-mask.astype("int64").sum(axis=1), kind="stable")


def _vocabulary(model):
    tokenizer = getattr(getattr(model, "preprocessor", None), "tokenizer", None)
    get = getattr(tokenizer, "get_vocabulary", None)
    return get() if callable(get) else None


def _checked_guide(guide, embedder):
    """Returns `guide`, frozen, after checking it can guide `embedder`."""
    if guide is None:
        return None
    if not isinstance(guide, keras.Model):
        raise TypeError(
            "`guide` must be None or a keras.Model mapping the embedder's "
            f"inputs to (B, D_guide) embeddings, got {type(guide).__name__}."
        )
    own = {id(v) for v in embedder.weights}
    if guide is embedder or any(id(v) in own for v in guide.weights):
        raise ValueError(
            "`guide` must not be the embedder or share its weights: the "
            "guide is frozen while the embedder trains. Pass a frozen copy, "
            "e.g. the base model loaded again."
        )
    ours, theirs = _vocabulary(embedder), _vocabulary(guide)
    if ours is not None and theirs is not None and ours != theirs:
        raise ValueError(
            "`guide` has another tokenizer vocabulary than the embedder "
            f"({len(theirs)} tokens against {len(ours)}), but it reads the "
            "token ids of the embedder's preprocessor. Use a guide with the "
            "embedder's tokenizer."
        )
    guide.trainable = False
    return guide


def _reads_guide(loss):
    """Whether `loss` masks by the guide embeddings it gets as `y_true`.

    A loss declares it with a `guide_margin` that is not None, as
    `MultipleNegativesRankingLoss` does; `MatryoshkaLoss` passes them on
    whole to such a loss, as to every in-batch loss.
    """
    if isinstance(loss, MatryoshkaLoss):
        return _reads_guide(loss.loss)
    return getattr(loss, "guide_margin", None) is not None


def _check_reads_guide(loss, y):
    if y is not None:
        raise ValueError(
            "A ContrastiveModel with a guide passes the guide's embeddings "
            "to the loss as y_true, so its data must carry no labels; got "
            f"a `y` of type {type(y).__name__}."
        )
    if loss is not None and not _reads_guide(loss):
        raise ValueError(
            f"ContrastiveModel has a guide, but its loss {loss!r} does not "
            "read the guide embeddings, so the guide would cost a forward "
            "pass per branch for nothing. Compile with keras_mrl.losses."
            "MultipleNegativesRankingLoss(guide_margin=0.0), alone or in "
            "MatryoshkaLoss, or drop the guide."
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

    Raw strings are padded in length buckets: each batch of each branch is
    cut to the smallest of `length_buckets` that holds its longest text
    (sentence-transformers pads to the longest text itself; a bucket keeps
    shapes static, so XLA compiles at most one program per bucket).
    `encode` also sorts its texts by token count, longest first, and
    returns the vectors in input order. Padding is masked, so
    buckets change the vectors by float rounding only.

    An optional `head` layer (for instance
    `keras_mrl.layers.OrthogonalProjection`) is applied to every embedding
    after the embedder; `encode` runs both. The head lives in this model
    (and its `.keras` file), not in the embedder's preset.

    Every KerasHub `TextEmbedder` family works the same way: BERT and
    XLM-RoBERTa (mean, cls or max pooling), Gemma3 and Qwen3 (last-token
    or mean pooling; Gemma3 also pooling inside its backbone, as
    EmbeddingGemma does). An embedder that normalises its output
    (`normalize=True`, or a backbone that pools and normalises) scales
    the full vector, and a prefix of a unit vector is not a unit vector.
    The in-batch losses of `keras_mrl.losses` score each prefix by
    cosine, which normalises after truncation: a positive scale of the
    full vector changes neither the loss nor its gradient, so such an
    embedder trains as it would without its normalisation. To serve a
    width, normalise after cutting: `encode(texts, dim=m)` or
    `keras_mrl.ops.truncate`.

    An optional `guide` model (GISTEmbed's guided in-batch negatives)
    embeds every branch too, frozen, and the loss gets the stacked guide
    embeddings `(B, 2 + n, D_guide)` as `y_true`:
    `keras_mrl.losses.MultipleNegativesRankingLoss(guide_margin=...)`,
    alone or inside `keras_mrl.losses.MatryoshkaLoss(...,
    nesting_dims=...)`, masks the in-batch candidates the guide scores
    above the anchor's positive minus the margin. The constructor sets
    `guide.trainable = False`, and no gradient reaches it; it lives in
    this model and its `.keras` file. The guide takes the embedder's
    inputs as they reach the embedder (token ids, after the embedder's
    preprocessor), so for text it must share the embedder's tokenizer: a
    frozen copy of the base model is the usual guide. A loss that does
    not read the guide embeddings raises on the first step rather than
    leave the guide unused.

    An optional `depth_sampling`, a `keras_mrl.models.DepthSampling`,
    trains the embedder's shallower depths too (2D Matryoshka): each
    training step adds the compiled loss of the pooled output of its
    first `k` transformer layers, `k` drawn in the step, to that of the
    full depth. It needs a KerasHub BERT-family text embedder
    (`keras_hub.models.BertTextEmbedder`,
    `keras_hub.models.XLMRobertaTextEmbedder`) of at least 2 layers;
    `keras_mrl.models.truncate_layers` serves a depth. `predict`,
    `evaluate` and `encode` use the full depth.
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
        guide: optional Keras model mapping the same inputs to
            `(B, D_guide)`; not the embedder, nor sharing its weights.
        length_buckets: the lengths raw-string batches are padded to:
            `"auto"` (16, 32, 64, ... up to the preprocessor's
            `sequence_length`), a list of ints (the `sequence_length` is
            added as the last), or None to pad every batch to the
            `sequence_length`. Only used with a KerasHub-style
            preprocessor, whose output has a `"padding_mask"`.
        depth_sampling: optional `keras_mrl.models.DepthSampling`.
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
    >>> served = model.encode(anchors, dim=2)  # cut, then L2-normalised
    >>> served.shape, bool(np.allclose(np.linalg.norm(served, axis=1), 1))
    ((8, 2), True)

    A frozen copy of the encoder as the guide:

    >>> guide = keras.models.clone_model(encoder)
    >>> guide.set_weights(encoder.get_weights())
    >>> guided = keras_mrl.models.ContrastiveModel(encoder, guide=guide)
    >>> guided.compile(
    ...     optimizer="adam",
    ...     loss=keras_mrl.losses.MatryoshkaLoss(
    ...         keras_mrl.losses.MultipleNegativesRankingLoss(
    ...             guide_margin=0.0
    ...         ),
    ...         nesting_dims=[2, 4],
    ...     ),
    ... )
    >>> history = guided.fit((anchors, positives), batch_size=4, verbose=0)
    >>> guide.trainable, len(guided.trainable_weights)
    (False, 2)

    The same training, 8 pairs a step embedded 2 pairs at a time:

    >>> cached = keras_mrl.models.ContrastiveModel(encoder, mini_batch_size=2)
    >>> cached.compile(optimizer="adam", loss=model.loss)
    >>> history = cached.fit((anchors, positives), batch_size=8, verbose=0)
    >>> cached.mini_batch_size
    2
    """

    def __init__(
        self,
        embedder,
        *,
        head=None,
        guide=None,
        depth_sampling=None,
        length_buckets="auto",
        mini_batch_size=None,
        **kwargs,
    ):
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
        self.guide = _checked_guide(guide, embedder)
        self.length_buckets = length_buckets
        self._traced_tokenizer = None
        self._buckets = resolve_buckets(
            length_buckets,
            getattr(self.preprocessor, "sequence_length", None),
        )
        if depth_sampling is not None and not isinstance(
            depth_sampling, DepthSampling
        ):
            raise TypeError(
                "`depth_sampling` must be None or a keras_mrl.models."
                f"DepthSampling, got {type(depth_sampling).__name__}."
            )
        self.depth_sampling = depth_sampling
        # A plain object, so that the functional model it holds, which
        # shares the embedder's layers, is neither tracked nor saved twice.
        self._layerwise = (
            None if depth_sampling is None else LayerwiseEmbedder(embedder)
        )
        self.mini_batch_size = check_optional_positive_int(
            mini_batch_size, "mini_batch_size"
        )
        if self.mini_batch_size is not None and depth_sampling is not None:
            # The cached step embeds through the embedder itself, not the
            # per-layer path that depth sampling reads its depth from.
            raise ValueError(
                "`mini_batch_size` and `depth_sampling` do not compose: the "
                "cached step would train the full depth only. Pass one of "
                "them."
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
        if self._layerwise is not None:
            self._layerwise.pending = None
            if training:
                return self._layerwise.embed(
                    _branches(inputs), self.depth_sampling, self.head, training
                )
        embeddings = []
        for branch in _branches(inputs):
            embedding = self.embedder(branch, training=training)
            if self.head is not None:
                embedding = self.head(embedding, training=training)
            embeddings.append(embedding)
        return ops.stack(embeddings, axis=1)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """Keras' loss, given the guide's embeddings as `y` with a guide;
        with `depth_sampling`, plus the terms of the depth drawn in the
        training call that gave `y_pred`."""
        if self.guide is not None and x is not None:
            _check_reads_guide(self.loss, y)
            y = ops.stop_gradient(
                ops.stack(
                    [
                        self.guide(branch, training=False)
                        for branch in _branches(x)
                    ],
                    axis=1,
                )
            )
        loss = super().compute_loss(
            x, y, y_pred, sample_weight, training=training
        )
        pending = self._layerwise is not None and (
            self._layerwise.pending is not None
        )
        if pending and training and self._compile_loss is not None:
            terms = self._layerwise.loss_terms(
                self._compile_loss,
                y,
                y_pred,
                sample_weight,
                self.depth_sampling,
            )
            loss = loss + ops.cast(terms, loss.dtype)
        return loss

    def train_step(self, *args):
        if self.mini_batch_size is None:
            return super().train_step(*args)
        # JAX passes (state, data), the other backends (data).
        branches = _branches(keras.utils.unpack_x_y_sample_weight(args[-1])[0])
        return cached_train_step(self, branches, *args)

    def make_train_function(self, force=False):
        # Keras under TensorFlow without a distribution strategy builds the
        # optimizer inside the first trace of the train step. A tf.function
        # whose first trace creates variables is traced a second time
        # without them (all-MiniLM-L6-v2's train step: 10 to 15 s a trace).
        # Built here, the trace creates no variable. An unbuilt layer (a
        # head not yet called) has no variables yet: then Keras builds it.
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            if self._weights_built():
                optimizer.build(self.trainable_variables)
        return super().make_train_function(force)

    def _weights_built(self):
        """Whether every layer but the preprocessor's has built its weights."""
        preprocessing = set()
        if self.preprocessor is not None:
            preprocessing = {id(x) for x in self.preprocessor._flatten_layers()}
        return all(
            layer.built
            for layer in self._flatten_layers(include_self=False)
            if id(layer) not in preprocessing
        )

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
            preprocessed (unchanged without a preprocessor) and each
            branch cut to its length bucket.
        """
        if self.preprocessor is not None:
            if isinstance(x, dict):
                keys = list(x)
                x = dict(
                    zip(keys, self._preprocess_branches([x[k] for k in keys]))
                )
            else:
                x = tuple(self._preprocess_branches(_branches(x)))
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def _preprocess_branches(self, branches):
        """The preprocessed branches, each cut to its length bucket.

        Batches of strings (what `make_dataset` gives) are tokenized in
        one call, then split: the preprocessor's graph is traced once
        rather than once per branch, which for a byte-pair tokenizer
        (Qwen3's) halves the time `tf.data` takes to start with pairs.
        """
        import tensorflow as tf

        joint = len(branches) > 1 and all(
            isinstance(b, tf.Tensor)
            and b.dtype == tf.string
            and b.shape.rank == 1
            for b in branches
        )
        if not joint:
            return [self._preprocess(b) for b in branches]
        # Static sizes (a batch made with drop_remainder) keep the static
        # batch dimension of every branch.
        sizes = [b.shape[0] for b in branches]
        if None in sizes:
            sizes = tf.stack([tf.shape(b)[0] for b in branches])
        inputs = self._tokenize(tf.concat(branches, axis=0))
        leaves = [tf.split(v, sizes, axis=0) for v in tf.nest.flatten(inputs)]
        return [
            self._trim(tf.nest.pack_sequence_as(inputs, [v[i] for v in leaves]))
            for i in range(len(branches))
        ]

    def _preprocess(self, texts):
        return self._trim(self._tokenize(texts))

    def _tokenize(self, texts):
        """The preprocessor on a batch of strings, traced once per model.

        `tf.data` traces the function it maps each time a dataset is
        built, and tracing a KerasHub tokenizer takes about a second: more
        than `encode` spends on a few texts. Inside that trace, a
        `tf.function` traced earlier is only called. The trace is redone
        when the preprocessor or its config (its `sequence_length`, say)
        changes, so it never runs stale settings.
        """
        import json

        import tensorflow as tf

        if not (isinstance(texts, tf.Tensor) and texts.dtype == tf.string):
            return self.preprocessor(texts)
        key = (
            id(self.preprocessor),
            json.dumps(
                self.preprocessor.get_config(), sort_keys=True, default=repr
            ),
        )
        if self._traced_tokenizer is None or self._traced_tokenizer[0] != key:
            traced = tf.function(
                self.preprocessor.__call__,
                autograph=False,
                reduce_retracing=True,
            )
            self._traced_tokenizer = (key, traced)
        return self._traced_tokenizer[1](texts)

    def _trim(self, inputs):
        if self._buckets is None:
            return inputs
        return trim(inputs, self._buckets)

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
            A `tf.data.Dataset` yielding the preprocessed inputs of `call`,
            each batch tokenized in one call, two batches ahead of the
            model, with tf.data's autotuning off.

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
        # The preprocessing code has no tensor-dependent Python control flow
        # (trim uses tf.cond), so AutoGraph would only spend seconds
        # rewriting KerasHub's tokenizer each time a dataset is built.
        x = x.map(
            tf.autograph.experimental.do_not_convert(self._unpack_element)
        ).prefetch(2)
        # One call tokenizes a whole batch, on one thread two batches ahead
        # of the model. With tf.data's autotuning, a `fit` on a 2-core CPU
        # sat idle for seconds at a time, waiting for its next batch, in
        # most of the runs measured (docs/benchmarks.md, section 16).
        options = tf.data.Options()
        options.autotune.enabled = False
        return x.with_options(options)

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

    def encode(self, x, *, batch_size=32, verbose=0, dim=None):
        """Embeds inputs with the embedder, then the head.

        Raw strings (with a preprocessor) are tokenized a batch at a
        time, sorted by token count, longest first (sentence-transformers
        sorts by characters, which can batch texts of unlike token counts
        together), cut to their length bucket and embedded by a forward
        pass compiled once per batch shape (by XLA under TensorFlow and
        JAX); the vectors come back in input order. Texts are sorted in
        windows of 64 batches, which bound the token ids held at once.
        Under XLA a batch smaller than `batch_size` is padded with
        copies of its last text: the last batch of a longer call to
        `batch_size`, a call of fewer texts to the next power of two, so
        calls of any size compile a bounded number of programs. Other
        inputs go through `predict`.

        With `dim`, each vector is cut to its first `dim` features and
        then L2-normalised, as `keras_mrl.ops.truncate` does: the prefix
        of a unit vector (what an embedder with `normalize=True` gives) is
        not a unit vector.

        Args:
            x: inputs of the embedder (raw strings with a preprocessor).
            batch_size: int, the number of inputs embedded at once.
            verbose: 0 for silence, 1 for a progress bar.
            dim: optional int, the width to serve; None returns the full
                vectors as the embedder and the head compute them.

        Returns:
            A numpy array `(N, D)` (`(N, dim)` with `dim`); a float32
            `(0, D)` for no inputs.

        Raises:
            ValueError: for a `batch_size` or `dim` below 1, a `dim`
                wider than the embeddings, a None row, or no inputs when
                the embedding width is unknown.
            TypeError: for a `dim` that is not an int, or inputs mixing
                strings with other values.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        if dim is not None:
            dim = check_dim(dim)
        x = _check_branch(x, "`x`")
        if _num_rows(x) == 0:
            width = self._output_width()
            if dim is not None:
                width = check_dim(dim, width, (0, width))
            return np.zeros((0, width), "float32")
        if self.preprocessor is not None and _holds_strings(x):
            embeddings = self._encode_texts(list(x), batch_size, verbose)
        else:
            embeddings = self.embedder.predict(
                x, batch_size=batch_size, verbose=verbose
            )
        if self.head is not None:
            embeddings = self.head(embeddings)
        if dim is not None:
            embeddings = truncate(embeddings, dim=dim)
        return np.asarray(ops.convert_to_numpy(embeddings))

    def _encode_texts(self, texts, batch_size, verbose):
        import tensorflow as tf

        # Longest first: similar lengths share a batch and a bucket, and
        # the largest program is compiled before the others. Characters
        # order the texts roughly; within each window their token counts
        # order them exactly: docstring queries sorted by characters
        # padded to 1.8x the tokens they do by tokens.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        window = _ENCODE_WINDOW_BATCHES * batch_size
        progress = keras.utils.Progbar(len(texts), verbose=verbose)
        parts = []
        for window_start in range(0, len(texts), window):
            rows = order[window_start : window_start + window]
            tokens = self._tokenize_numpy([texts[i] for i in rows], batch_size)
            by_tokens = _longest_first(tokens)
            order[window_start : window_start + window] = rows[by_tokens]
            for start in range(0, len(rows), batch_size):
                picked = by_tokens[start : start + batch_size]
                batch = self._trim(
                    tf.nest.map_structure(
                        lambda v: tf.constant(v[picked]), tokens
                    )
                )
                batch = tf.nest.map_structure(lambda t: t.numpy(), batch)
                size = padded_rows(
                    len(picked), batch_size, window_start + start > 0
                )
                parts.append(predict_batch(self.embedder, batch, size))
                progress.add(len(picked))
        sorted_embeddings = np.concatenate(parts)
        embeddings = np.empty_like(sorted_embeddings)
        embeddings[order] = sorted_embeddings
        return embeddings

    def _tokenize_numpy(self, texts, batch_size):
        """The preprocessor's output for `texts`, as numpy arrays.

        The texts are tokenized `batch_size` at a time, the shape the
        traced tokenizer already knows.
        """
        import tensorflow as tf

        # A plain loop rather than tf.data: a new dataset iterator costs
        # about 0.4 s of graph optimisation, more than tokenizing takes.
        batches = []
        for start in range(0, len(texts), batch_size):
            batch = self._tokenize(
                tf.constant(texts[start : start + batch_size])
            )
            batches.append(tf.nest.map_structure(lambda t: t.numpy(), batch))
        return _concatenate(batches)

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
                "guide": (
                    None
                    if self.guide is None
                    else keras.saving.serialize_keras_object(self.guide)
                ),
                "length_buckets": self.length_buckets,
                "depth_sampling": (
                    None
                    if self.depth_sampling is None
                    else keras.saving.serialize_keras_object(
                        self.depth_sampling
                    )
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
        guide = config.pop("guide", None)
        if guide is not None:
            guide = keras.saving.deserialize_keras_object(guide)
        depth_sampling = config.pop("depth_sampling", None)
        if depth_sampling is not None:
            depth_sampling = keras.saving.deserialize_keras_object(
                depth_sampling
            )
        return cls(
            embedder,
            head=head,
            guide=guide,
            depth_sampling=depth_sampling,
            **config,
        )
