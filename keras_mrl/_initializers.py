"""Initial values for a layer that adds several weights from one initializer.

A Keras initializer seeded with an int, or left unseeded, returns the same
values each time it is called with the same shape, and values drawn from the
same stream for other shapes. A layer that calls one instance once per weight
would start those weights as copies or scaled copies of each other.
"""

import keras
import numpy as np


def independent(initializer, count):
    """Returns `count` initializers whose draws are independent.

    The first is `initializer` itself, so the first weight starts as a
    layer with that initializer alone would. The others are copies seeded
    from its seed and their position: deterministic for a seeded
    initializer, independent of each other and of the first. Initializers
    seeded with a `keras.random.SeedGenerator` already advance on each call
    and are returned as they are, and so are those that draw nothing
    (`Zeros`, `Constant`, ...) and plain functions, which Keras cannot
    reseed.

    Args:
        initializer: a `keras.initializers.Initializer` or callable.
        count: int, how many weights it initialises.

    Returns:
        A list of `count` initializers.
    """
    # Keras' random initializers keep the int they draw with in `seed` and
    # take it back through `from_config`; `RandomInitializer` is private.
    seed = getattr(initializer, "seed", None)
    if not isinstance(initializer, keras.initializers.Initializer) or (
        not isinstance(seed, int)
    ):
        return [initializer] * count
    config = initializer.get_config()
    if "seed" not in config:
        return [initializer] * count
    copies = [initializer]
    for position in range(1, count):
        # SeedSequence mixes (seed, position) so that no copy shares a
        # stream with another, nor with an initializer seeded `seed + 1`.
        state = np.random.SeedSequence([seed, position]).generate_state(1)
        config["seed"] = int(state[0] % 2**31)
        copies.append(type(initializer).from_config(config))
    return copies


def split_draw(initializer, shape, bounds):
    """Returns one initializer per block of rows of a single draw.

    `initializer` is called once, on the whole `shape`, so its fan-in and
    its draw are those of one weight of that shape; block `(start, end)`
    then starts as rows `start:end` of it.

    Args:
        initializer: a `keras.initializers.Initializer` or callable.
        shape: the shape of the whole weight, rows first.
        bounds: a list of `(start, end)` row ranges.

    Returns:
        A list of initializers, one per range in `bounds`.
    """
    drawn = {}

    def block(start, end):
        def init(shape_, dtype=None):
            if dtype not in drawn:
                drawn[dtype] = initializer(shape, dtype=dtype)
            return drawn[dtype][start:end]

        return init

    return [block(start, end) for start, end in bounds]
