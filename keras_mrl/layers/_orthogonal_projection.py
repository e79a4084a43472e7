import keras
import numpy as np
from keras import ops

from keras_mrl._validation import check_bool
from keras_mrl._validation import check_finite
from keras_mrl._validation import to_numpy

# Newton-Schulz maps a singular value s to s (3 - s^2) / 2, which squares
# the error of s^2: an error e of s^2 becomes about -0.75 e^2. From
# ||W^T W - I||_F <= 0.25 three steps reach float32's precision.
_BASIN = 0.25
_POLISH_STEPS = 3
# From W / sqrt(||W^T W||) every singular value is in (0, 1], and a small
# one grows 1.5-fold a step: 60 steps bring one of 1e-9 times the largest,
# below float32's resolution, into the basin.
_MAX_STEPS = 60


def _newton_schulz(w, gram):
    """One step `W (3 I - W^T W) / 2`; returns the new W and its W^T W."""
    w = _step(w, gram)
    return w, ops.matmul(ops.transpose(w), w)


def _step(w, gram):
    return 1.5 * w - 0.5 * ops.matmul(w, gram)


def _distance(gram):
    """||W^T W - I||_F, a bound on every |s^2 - 1| of W's singular values."""
    return ops.sqrt(ops.sum(ops.square(gram - ops.eye(ops.shape(gram)[0]))))


def _orthonormal_columns(w):
    """Q of `W = QR` with R's diagonal made >= 0: orthogonal for any W."""
    q, r = ops.qr(w)
    signs = ops.where(ops.diagonal(r) < 0, -1.0, 1.0)
    return q * signs[None, :]


@keras.saving.register_keras_serializable(package="keras_mrl")
class _NearestOrthogonal(keras.constraints.Constraint):
    """Moves a square kernel to the nearest orthogonal matrix.

    The nearest orthogonal matrix is the polar factor `U V^T` of `W = U S
    V^T`, which Newton-Schulz steps `W <- W (3 I - W^T W) / 2` reach for
    singular values in (0, sqrt(3)). The SVD would give it directly, but
    XLA's CPU SVD took about 100 s on a 384 x 384 kernel under TensorFlow;
    matrix products are what every backend runs fast.

    After the small steps of fine-tuning the kernel is near orthogonal and
    three steps suffice. A large optimizer step can move the singular
    values outside that range, where the steps diverge to NaN: such a
    kernel is first divided by a bound on its largest singular value, then
    stepped until it is near orthogonal (as many steps as it needs, at most
    `_MAX_STEPS`). A kernel of (numerically) lower rank has no unique
    nearest orthogonal matrix, and the steps leave its null space at 0: it
    gets the orthonormal Q of its QR decomposition instead. The kernel is
    thus orthogonal after every step, whatever the gradient.
    """

    def __call__(self, w):
        dtype = w.dtype
        # Steps that square the error need float32's precision at least.
        w = ops.cast(w, "float32")
        gram = ops.matmul(ops.transpose(w), w)
        # ||W^T W|| bounds the largest s^2 (the induced inf-norm and the
        # Frobenius norm both do); dividing by its root puts every s in
        # (0, 1]. Near orthogonal, scaling would only cost steps.
        bound = ops.minimum(
            ops.max(ops.sum(ops.abs(gram), axis=1)),
            ops.sqrt(ops.sum(ops.square(gram))),
        )
        # A kernel of zeros stays finite (and goes to the QR below).
        bound = ops.maximum(bound, 1e-30)
        scale = ops.where(_distance(gram) < 1.0, 1.0, ops.rsqrt(bound))
        w, gram = w * scale, gram * ops.square(scale)

        def far(_, gram):
            return _distance(gram) > _BASIN

        w, gram = ops.while_loop(
            far, _newton_schulz, (w, gram), maximum_iterations=_MAX_STEPS
        )
        for _ in range(_POLISH_STEPS - 1):
            w, gram = _newton_schulz(w, gram)
        # Only a kernel of short rank is still outside the basin here; the
        # last step needs no new W^T W.
        in_basin = _distance(gram) <= _BASIN
        w = _step(w, gram)
        w = ops.cond(in_basin, lambda: w, lambda: _orthonormal_columns(w))
        return ops.cast(w, dtype)


@keras.saving.register_keras_serializable(package="keras_mrl")
class OrthogonalProjection(keras.layers.Layer):
    """Rotates embeddings onto their principal axes: `x @ Q`, Q orthogonal.

    `adapt(embeddings)` sets the `(D, D)` kernel to the principal axes of
    `embeddings` (the eigenvectors of their covariance, by decreasing
    variance), so that the first `m` output features are the PCA projection
    of width `m` of the input. Appended to a pretrained embedder before
    Matryoshka fine-tuning, it starts every prefix at PCA's quality. Because
    the kernel is orthogonal, full-width dot products, norms and cosines are
    those of the input: the full-width model is unchanged. Before `adapt`
    the kernel is the identity.

    The kernel trains with the rest of the model. With `keep_orthogonal`
    (the default) it is moved back to the nearest orthogonal matrix after
    every optimizer step, whatever the learning rate (Newton-Schulz
    iterations: three after the small steps of fine-tuning, more after a
    large step), so full-width cosines stay those of the embedder; with
    `keep_orthogonal=False` it is a free linear map started at the
    rotation. Set `trainable=False` to keep the rotation fixed.

    Args:
        keep_orthogonal: bool, whether the kernel stays orthogonal in
            training.
        **kwargs: base layer keyword arguments, such as `name`,
            `trainable` and `dtype`.

    Call arguments:
        inputs: a tensor `(..., D)`; integer or bool inputs are cast to
            the layer's compute dtype.

    Returns:
        A tensor `(..., D)`.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 4)) * [0.1, 3.0, 1.0, 0.5]
    >>> layer = keras_mrl.layers.OrthogonalProjection()
    >>> layer.adapt(x)
    >>> y = keras.ops.convert_to_numpy(layer(x))
    >>> [int(i) for i in np.argsort(-y.var(axis=0))]  # by variance
    [0, 1, 2, 3]
    >>> bool(np.allclose(np.linalg.norm(y, axis=1),
    ...                  np.linalg.norm(x, axis=1), atol=1e-4))
    True
    """

    def __init__(self, *, keep_orthogonal=True, **kwargs):
        super().__init__(**kwargs)
        self.keep_orthogonal = check_bool(keep_orthogonal, "keep_orthogonal")

    def build(self, input_shape):
        width = tuple(input_shape)[-1] if tuple(input_shape) else None
        if width is None:
            raise ValueError(
                "OrthogonalProjection needs inputs of shape (..., D) with a "
                f"known D, got shape {tuple(input_shape)}."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(width, width),
            initializer="identity",
            constraint=_NearestOrthogonal() if self.keep_orthogonal else None,
        )
        self.input_spec = keras.layers.InputSpec(min_ndim=1, axes={-1: width})

    def adapt(self, data):
        """Sets the kernel to the principal axes of `data`.

        Args:
            data: array or tensor `(N, D)` of embeddings, `N >= 2`, finite.

        Raises:
            ValueError: for data that is not 2-D, has fewer than 2 rows,
                holds NaN or inf, or whose width differs from the built
                layer's.
        """
        data = check_finite(to_numpy(data), "data").astype(np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise ValueError(
                "`data` must be embeddings of shape (N, D) with N >= 2, got "
                f"shape {data.shape}."
            )
        if not self.built:
            self.build((None, data.shape[1]))
        if self.kernel.shape[0] != data.shape[1]:
            raise ValueError(
                f"`data` has width {data.shape[1]}, but the layer was built "
                f"for width {self.kernel.shape[0]}."
            )
        covariance = np.cov(data, rowvar=False)
        values, vectors = np.linalg.eigh(covariance)
        vectors = vectors[:, np.argsort(-values, kind="stable")]
        # An eigenvector's sign is arbitrary; fix it for reproducibility.
        largest = np.argmax(np.abs(vectors), axis=0)
        vectors *= np.sign(vectors[largest, np.arange(vectors.shape[1])])
        self.kernel.assign(vectors.astype(self.kernel.dtype))

    def call(self, inputs):
        # Keras autocasts float inputs only; the kernel cast to an int
        # dtype would round a rotation to zeros.
        if not keras.backend.is_float_dtype(inputs.dtype):
            inputs = ops.cast(inputs, self.compute_dtype)
        return ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"keep_orthogonal": self.keep_orthogonal})
        return config
