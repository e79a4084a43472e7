"""keras_mrl.retrieval.mine_hard_negatives against a brute-force search."""

import keras
import numpy as np
import pytest

from keras_mrl.losses import MultipleNegativesRankingLoss
from keras_mrl.models import ContrastiveModel
from keras_mrl.retrieval import _mining
from keras_mrl.retrieval import mine_hard_negatives

once = pytest.mark.once


def _cosines(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def reference(
    anchors,
    positives,
    corpus=(),
    *,
    num_negatives,
    range_min=0,
    range_max,
    absolute_margin=None,
    relative_margin=None,
    max_score=None,
    min_score=None,
):
    """`(kept rows, (rows, n) negative vectors)`, one row at a time.

    Written from the definition, on vectors: rank the distinct corpus
    vectors by cosine, strike out the row's positives (those of every row
    with an equal anchor) and the anchor, keep ranks `range_min` to
    `range_max - 1` that pass the filters, take the best `num_negatives`.
    """
    documents = []
    for vector in list(positives) + list(corpus):
        if not any(np.array_equal(vector, d) for d in documents):
            documents.append(vector)
    documents = np.asarray(documents)
    kept, negatives = [], []
    for i, (anchor, positive) in enumerate(zip(anchors, positives)):
        scores = _cosines(anchor[None], documents)[0]
        own = [
            positives[j]
            for j in range(len(anchors))
            if np.array_equal(anchors[j], anchor)
        ] + [anchor]
        ranked = [
            d
            for d in np.argsort(-scores, kind="stable")
            if not any(np.array_equal(documents[d], o) for o in own)
        ][range_min:range_max]
        pos = _cosines(anchor[None], positive[None])[0, 0]
        valid = [
            d
            for d in ranked
            if (absolute_margin is None or scores[d] <= pos - absolute_margin)
            and (
                relative_margin is None
                or scores[d] <= pos - abs(pos) * relative_margin
            )
            and (max_score is None or scores[d] <= max_score)
            and (min_score is None or scores[d] >= min_score)
        ]
        if len(valid) >= num_negatives:
            kept.append(i)
            negatives.append(documents[valid[:num_negatives]])
    return np.asarray(kept), np.asarray(negatives)


def _pairs(n=40, width=16, noise=0.4, seed=0):
    rng = np.random.default_rng(seed)
    documents = rng.normal(size=(n, width)).astype("float32")
    queries = documents + noise * rng.normal(size=(n, width)).astype("float32")
    return queries.astype("float32"), documents


def _stack(branches):
    return np.stack(branches[2:], axis=1)


def _circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, "float64"))
    return np.stack([np.cos(radians), np.sin(radians)], 1).astype("float32")


@once
@pytest.mark.parametrize(
    "options",
    [
        dict(num_negatives=3),
        dict(num_negatives=2, range_min=3, range_max=9),
        dict(num_negatives=3, absolute_margin=0.05),
        dict(num_negatives=2, relative_margin=0.3, range_max=12),
        dict(num_negatives=2, max_score=0.2, min_score=-0.1, range_max=20),
        dict(
            num_negatives=4,
            range_min=1,
            range_max=10,
            absolute_margin=0.0,
            max_score=0.4,
        ),
    ],
)
def test_top_negatives_match_a_brute_force_search(options):
    queries, documents = _pairs()
    extra = np.random.default_rng(1).normal(size=(30, 16)).astype("float32")
    # Rows 5 and 6 share an anchor: each row's positive is the other's
    # false negative.
    queries[6] = queries[5]
    branches = mine_hard_negatives(
        queries, documents, corpus=extra, verbose=0, **options
    )
    options = dict(options)
    range_max = options.pop("range_max", None) or (
        options.get("range_min", 0)
        + options["num_negatives"]
        * (10 if {"absolute_margin", "relative_margin"} & set(options) else 1)
    )
    kept, expected = reference(
        queries, documents, extra, range_max=range_max, **options
    )
    assert len(kept) >= len(queries) // 2
    np.testing.assert_array_equal(branches[0], queries[kept])
    np.testing.assert_array_equal(branches[1], documents[kept])
    np.testing.assert_array_equal(_stack(branches), expected)


@once
def test_funnel_with_a_shortlist_of_the_whole_corpus_is_exact():
    queries, documents = _pairs(n=60, width=32)
    kept, expected = reference(
        queries, documents, num_negatives=3, range_min=2, range_max=5
    )
    funnel = mine_hard_negatives(
        queries,
        documents,
        num_negatives=3,
        range_min=2,
        stage_dims=(8, 32),
        shortlist=(60,),
        verbose=0,
    )
    np.testing.assert_array_equal(_stack(funnel), expected)
    np.testing.assert_array_equal(funnel[0], queries[kept])


@once
@pytest.mark.parametrize(
    "width, stage_dims, shortlist", [(256, (64, 256), (100,)), (32, (32,), ())]
)
def test_default_funnel_shortlists_wide_embeddings_at_a_prefix(
    monkeypatch, width, stage_dims, shortlist
):
    built = []

    class Spy(_mining.FunnelIndex):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(_mining, "FunnelIndex", Spy)
    queries, documents = _pairs(n=30, width=width)
    mine_hard_negatives(queries, documents, num_negatives=2, verbose=0)
    assert built[0].stage_dims == stage_dims
    assert built[0].shortlist == shortlist


# Documents on the unit circle at known angles from the anchor (0 degrees):
# cosines 0.98 (10), 0.94 (20), 0.87 (30), 0.77 (40), 0.64 (50), 0.5 (60),
# 0.34 (70), 0.17 (80); the positive is at 25 degrees (0.906).
ANGLES = [25, 10, 20, 30, 40, 50, 60, 70, 80]


def _mine_circle(**options):
    documents = _circle(ANGLES)
    # A second pair far away gives the corpus a second positive.
    anchors = np.concatenate([_circle([0]), _circle([180])])
    positives = np.concatenate([documents[:1], _circle([185])])
    branches = mine_hard_negatives(
        anchors,
        positives,
        corpus=documents[1:],
        verbose=0,
        on_too_few="drop",
        **options,
    )
    np.testing.assert_array_equal(branches[0][0], anchors[0])
    first = _stack(branches)[0]
    angles = np.rad2deg(np.arctan2(first[:, 1], first[:, 0]))
    return np.round(angles).astype(int).tolist()


@once
@pytest.mark.parametrize(
    "options, angles",
    [
        (dict(num_negatives=3), [10, 20, 30]),
        (dict(num_negatives=2, range_min=2), [30, 40]),
        (dict(num_negatives=2, range_min=1, range_max=3), [20, 30]),
        (dict(num_negatives=2, max_score=0.93), [30, 40]),
        (dict(num_negatives=2, min_score=0.3, range_max=9), [10, 20]),
        (dict(num_negatives=2, absolute_margin=0.0), [30, 40]),
        (dict(num_negatives=2, absolute_margin=0.1), [40, 50]),
        # 0.906 - 0.906 * 0.2 = 0.72: 40 degrees (0.77) is struck out.
        (dict(num_negatives=2, relative_margin=0.2), [50, 60]),
        (
            dict(
                num_negatives=2,
                sampling_strategy="random",
                min_score=0.55,
                absolute_margin=0.1,
                seed=0,
            ),
            [40, 50],
        ),
    ],
)
def test_each_filter_on_known_neighbours(options, angles):
    assert _mine_circle(**options) == angles


@once
def test_rows_with_too_few_negatives_are_dropped_or_raise(capsys):
    documents = _circle(ANGLES)
    anchors = _circle([0, 0.5, 180])
    positives = np.concatenate([documents[:1], _circle([24, 185])])
    options = dict(corpus=documents[1:], num_negatives=2, max_score=0.8)
    # Row 2 (at 180 degrees) has no candidate above -0.2.
    branches = mine_hard_negatives(
        anchors, positives, min_score=-0.2, verbose=1, **options
    )
    np.testing.assert_array_equal(branches[0], anchors[:2])
    printed = capsys.readouterr().out
    assert "for 2 of 3 rows" in printed and "dropped 1 rows" in printed
    with pytest.raises(ValueError, match=r"1 of 3 rows .*\(rows \[2\]\)"):
        mine_hard_negatives(
            anchors,
            positives,
            min_score=-0.2,
            on_too_few="raise",
            verbose=0,
            **options,
        )
    with pytest.raises(ValueError, match="3 of 3 rows .*none is left"):
        mine_hard_negatives(
            anchors, positives, min_score=0.79, verbose=0, **options
        )


class _TableEmbedder:
    """Embeds strings by looking them up; counts what it embeds."""

    def __init__(self, table):
        self.table = table
        self.embedded = []

    def encode(self, texts):
        self.embedded.extend(texts)
        return np.stack([self.table[t] for t in texts])


@once
def test_the_positive_its_duplicates_and_the_anchor_are_never_negatives():
    rng = np.random.default_rng(0)
    words = ["q", "p", "twin", "d1", "d2", "d3", "q2", "p2"]
    table = {w: rng.normal(size=8).astype("float32") for w in words}
    # Texts are equal when they are the same string: "twin" embeds exactly
    # as the positive "p" but is another text, so it may be a negative.
    table["twin"] = table["p"].copy()
    table["q2"] = table["q"] + 0.01
    embedder = _TableEmbedder(table)
    corpus = ["p", "twin", "q", "d1", "d2", "d3", "p", "p2"]
    branches = mine_hard_negatives(
        ["q", "q", "q2"],
        ["p", "p", "p2"],
        embedder=embedder,
        corpus=corpus,
        num_negatives=5,
        verbose=0,
    )
    assert branches[0] == ["q", "q", "q2"]
    negatives = [set(row) for row in zip(*branches[2:])]
    # Rows 0 and 1 share the anchor "q", which the corpus also holds: the
    # positive "p", its repeat in the corpus and "q" itself are out.
    assert negatives[0] == negatives[1] == {"twin", "d1", "d2", "d3", "p2"}
    # Row 2 may take the other rows' positive, not its own.
    assert len(negatives[2]) == 5
    assert negatives[2] < {"p", "twin", "q", "d1", "d2", "d3"}
    # Every distinct text is embedded once.
    assert sorted(embedder.embedded) == sorted(words)


@once
def test_equal_vectors_are_one_document():
    queries, documents = _pairs(n=12, width=8)
    # Document 3 repeated in the corpus, and document 4 equal to the
    # positive of row 0: neither may be a negative of row 0.
    documents[4] = documents[0]
    corpus = documents[[3, 3, 3]]
    branches = mine_hard_negatives(
        queries,
        documents,
        corpus=corpus,
        num_negatives=10,
        verbose=0,
        on_too_few="raise",
    )
    # 11 distinct documents, less the positive: all 10 others, once each.
    row = _stack(branches)[0]
    assert not (row == documents[0]).all(axis=1).any()
    assert len(np.unique(row, axis=0)) == 10
    assert (row == documents[3]).all(axis=1).sum() == 1


@once
def test_random_sampling_is_deterministic_with_a_seed():
    queries, documents = _pairs(n=50)
    options = dict(
        num_negatives=3,
        range_max=15,
        sampling_strategy="random",
        verbose=0,
    )
    first = _stack(mine_hard_negatives(queries, documents, seed=7, **options))
    again = _stack(mine_hard_negatives(queries, documents, seed=7, **options))
    other = _stack(mine_hard_negatives(queries, documents, seed=8, **options))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # Each row's sample is 3 distinct candidates of its 15, best first.
    _, top = reference(queries, documents, num_negatives=15, range_max=15)
    for row, candidates in zip(first, top):
        places = [
            int(np.flatnonzero((candidates == v).all(axis=1))[0]) for v in row
        ]
        assert places == sorted(set(places))


@once
def test_text_lists_come_back_as_lists_ready_for_fit_branches():
    rng = np.random.default_rng(0)
    table = {f"t{i}": rng.normal(size=4) for i in range(12)}
    anchors, positives = ["t0", "t1", "t2"], ["t3", "t4", "t5"]
    branches = mine_hard_negatives(
        np.asarray(anchors),
        positives,
        embedder=_TableEmbedder(table),
        corpus=[f"t{i}" for i in range(6, 12)],
        num_negatives=2,
        verbose=0,
    )
    assert len(branches) == 4
    assert all(isinstance(b, list) and len(b) == 3 for b in branches)
    assert branches[:2] == (anchors, positives)


def test_keras_models_embed_by_predict_or_encode_and_the_result_trains():
    rng = np.random.default_rng(0)
    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    anchors = rng.normal(size=(24, 6)).astype("float32")
    positives = anchors + 0.1 * rng.normal(size=(24, 6)).astype("float32")
    by_predict = mine_hard_negatives(
        anchors, positives, embedder=encoder, num_negatives=2, verbose=0
    )
    model = ContrastiveModel(encoder)
    by_encode = mine_hard_negatives(
        anchors, positives, embedder=model, num_negatives=2, verbose=0
    )
    embedded = encoder.predict(np.concatenate([positives, anchors]), verbose=0)
    kept, expected = reference(
        embedded[24:], embedded[:24], num_negatives=2, range_max=2
    )
    assert len(kept) == 24
    for branches in (by_predict, by_encode):
        np.testing.assert_array_equal(branches[0], anchors)
        np.testing.assert_allclose(
            encoder.predict(_stack(branches).reshape(-1, 6), verbose=0),
            expected.reshape(-1, 8),
            atol=1e-5,
        )
    model.compile(optimizer="adam", loss=MultipleNegativesRankingLoss())
    history = model.fit(by_encode, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@once
def test_verbose_0_prints_nothing(capsys):
    queries, documents = _pairs(n=10)
    mine_hard_negatives(queries, documents, num_negatives=2, verbose=0)
    assert capsys.readouterr().out == ""
    mine_hard_negatives(queries, documents, num_negatives=2, verbose=1)
    assert "Mined 2 negatives for 10 of 10 rows" in capsys.readouterr().out


_Q, _D = _pairs(n=10, width=4)


@once
@pytest.mark.parametrize(
    "args, options, error, match",
    [
        ((_Q, _D), dict(num_negatives=0), ValueError, "num_negatives"),
        ((_Q, _D), dict(num_negatives=2.0), TypeError, "num_negatives"),
        ((_Q, _D), dict(range_min=-1), ValueError, "range_min"),
        ((_Q, _D), dict(range_min=True), TypeError, "range_min"),
        ((_Q, _D), dict(range_min=3, range_max=3), ValueError, "range_max"),
        (
            (_Q, _D),
            dict(num_negatives=3, range_min=1, range_max=3),
            ValueError,
            "Cannot mine `num_negatives`=3 .* 2 ranks",
        ),
        ((_Q, _D), dict(max_score="high"), TypeError, "max_score"),
        ((_Q, _D), dict(min_score=np.nan), ValueError, "min_score"),
        (
            (_Q, _D),
            dict(min_score=0.5, max_score=0.2),
            ValueError,
            "min_score.*exceeds.*max_score",
        ),
        ((_Q, _D), dict(absolute_margin=-0.1), ValueError, "absolute_margin"),
        ((_Q, _D), dict(relative_margin=-1.0), ValueError, "relative_margin"),
        ((_Q, _D), dict(sampling_strategy="best"), ValueError, "sampling"),
        ((_Q, _D), dict(on_too_few="skip"), ValueError, "on_too_few"),
        ((_Q, _D), dict(batch_size=0), ValueError, "batch_size"),
        ((_Q, _D), dict(seed=1.5), TypeError, "seed"),
        ((_Q, _D), dict(verbose=True), ValueError, "verbose"),
        ((_Q, _D), dict(verbose=3), ValueError, "verbose"),
        ((_Q, _D), dict(embedder=object()), TypeError, "embedder"),
        ((_Q, _D[:9]), {}, ValueError, "10 anchors and 9 positives"),
        ((_Q[:0], _D[:0]), {}, ValueError, "at least one"),
        ((["a", "b"], ["c", "d"]), {}, TypeError, "need an `embedder`"),
        ((["a", 1], ["c", "d"]), {}, TypeError, "row 1 is 1"),
        ((["a", None], ["c", "d"]), {}, ValueError, "None at row 1"),
        (
            (["a", "b"], ["c", "d"]),
            dict(embedder=_TableEmbedder({}), corpus=_D),
            TypeError,
            "strings while `corpus` does not",
        ),
        ((_Q, _D[:, :3]), {}, ValueError, "rows of one shape"),
        ((_Q[:, :, None], _D[:, :, None]), {}, ValueError, "2-D embeddings"),
        ((np.where(_Q > 1, np.nan, _Q), _D), {}, ValueError, "anchors.*NaN"),
        ((_Q, _D), dict(stage_dims=(8,)), ValueError, "stage_dims"),
        (
            (_Q, _D),
            dict(stage_dims=(2, 4), shortlist=(2,)),
            ValueError,
            r"shortlist.*fewer than the 4 candidates",
        ),
        (
            (["a", "b"], ["c", "d"]),
            dict(embedder=_TableEmbedder({w: np.ones(2) for w in "abcd"})),
            ValueError,
            "none is left",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_value(args, options, error, match):
    with pytest.raises(error, match=match):
        mine_hard_negatives(*args, **{"verbose": 0, **options})


@once
def test_an_embedder_that_returns_the_wrong_shape_raises():
    class Flat:
        def encode(self, texts):
            return np.ones(len(texts))

    with pytest.raises(ValueError, match=r"2-D array \(N, D\).*shape \(4,\)"):
        mine_hard_negatives(["a", "b"], ["c", "d"], embedder=Flat(), verbose=0)
