"""FunnelIndex stages in int8 and binary precision."""

import json

import numpy as np
import pytest

import keras_mrl
from keras_mrl.retrieval import FunnelIndex
from keras_mrl.retrieval import _first_stage
from keras_mrl.retrieval import _quantized_stage

pytestmark = pytest.mark.once

HAS_FAISS = _first_stage.import_faiss() is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
FIRST_STAGES = [
    pytest.param(None, id="faiss", marks=needs_faiss),
    pytest.param(False, id="numpy"),
]


def data(n=400, q=9, d=48, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d)).astype("float32"),
        rng.normal(size=(q, d)).astype("float32"),
    )


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sign_bits(x, width):
    return np.packbits(x[:, :width] > 0, axis=1)


def hamming_reference(queries, corpus, width):
    """Differing sign bits of the `width` prefixes, bit by bit."""
    a = queries[:, None, :width] > 0
    b = corpus[None, :, :width] > 0
    return (a != b).sum(axis=-1)


def int8_scores_reference(
    queries, corpus, width, calibration=None, normalize=True
):
    """Query . decoded int8 codes, from keras_mrl.serving.quantize."""
    prep = unit if normalize else (lambda x: x)
    c = prep(corpus[:, :width])
    cal = c if calibration is None else prep(calibration[:, :width])
    codes = keras_mrl.serving.quantize(c, precision="int8", calibration=cal)
    low, high = cal.min(axis=0), cal.max(axis=0)
    decoded = low + (codes.astype("float64") + 128.5) * (high - low) / 255
    return prep(queries[:, :width]).astype("float64") @ decoded.T


def assert_best_by(scores, ids, full, k):
    """`ids` are k distinct rows whose scores in `full` are `scores`, the
    k highest; which of equal scores are kept is not specified."""
    assert ids.shape == scores.shape == (len(full), k)
    for row in range(len(full)):
        assert len(set(ids[row].tolist())) == k
        np.testing.assert_allclose(
            scores[row], full[row, ids[row]], rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            scores[row], np.sort(full[row])[::-1][:k], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
@pytest.mark.parametrize("width", [8, 24, 48])
def test_binary_first_stage_is_the_exact_hamming_ranking(use_faiss, width):
    corpus, queries = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(width,),
        shortlist=(),
        precisions=("binary",),
        use_faiss=use_faiss,
    )
    assert index.uses_faiss == (use_faiss is None)
    scores, ids = index.search(queries, k=15)
    distances = hamming_reference(queries, corpus, width)
    # The score is the sign vectors' inner product, width - 2 * hamming.
    assert_best_by(scores, ids, width - 2.0 * distances, 15)
    np.testing.assert_array_equal(
        distances,
        keras_mrl.serving.hamming_distance(
            keras_mrl.serving.quantize(queries, precision="binary", dim=width),
            corpus=keras_mrl.serving.quantize(
                corpus, precision="binary", dim=width
            ),
        ),
    )


def test_hamming_without_numpy_bitwise_count(monkeypatch):
    corpus, queries = data()
    expected = hamming_reference(queries, corpus, 40)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    got = _quantized_stage.hamming(
        sign_bits(queries, 40), sign_bits(corpus, 40)
    )
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@needs_faiss
def test_binary_hnsw_finds_the_hamming_neighbours():
    corpus, queries = data(n=3000, q=20, d=64)
    index = FunnelIndex(
        corpus,
        stage_dims=(64,),
        shortlist=(),
        precisions=("binary",),
        index="hnsw",
        hnsw_m=32,
        ef_construction=200,
        ef_search=200,
    )
    scores, ids = index.search(queries, k=10)
    assert type(index._first).__name__ == "FaissBinaryHNSWFirstStage"
    distances = hamming_reference(queries, corpus, 64)
    np.testing.assert_array_equal(
        scores, 64 - 2.0 * np.take_along_axis(distances, ids, axis=1)
    )
    # Approximate: most results are as near as the exact 10th neighbour.
    tenth = np.sort(distances, axis=1)[:, 9:10]
    found = np.take_along_axis(distances, ids, axis=1) <= tenth
    assert found.mean() > 0.9


@needs_faiss
def test_narrow_binary_hnsw_beam_raises_instead_of_padding():
    corpus, queries = data(n=60)
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(60,),
        precisions=("binary", "float32"),
        index="hnsw",
        ef_search=1,
    )
    with pytest.raises(
        ValueError,
        match="found only .* fewer than k=60.*ef_search=1 is too narrow",
    ):
        index.search(queries, k=60)


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
@pytest.mark.parametrize("normalize", [True, False])
def test_int8_first_stage_matches_the_numpy_reference(use_faiss, normalize):
    corpus, queries = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(24,),
        shortlist=(),
        precisions=("int8",),
        normalize=normalize,
        use_faiss=use_faiss,
    )
    scores, ids = index.search(queries, k=10)
    full = int8_scores_reference(queries, corpus, 24, normalize=normalize)
    assert_best_by(scores, ids, full, 10)
    np.testing.assert_array_equal(
        ids, np.argsort(-full, axis=1, kind="stable")[:, :10]
    )


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_int8_codes_are_those_of_serving_quantize(use_faiss):
    corpus, _ = data()
    calibration = data(n=50, seed=1)[0] * 0.8
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(50,),
        precisions=("int8", "int8"),
        calibration=calibration,
        use_faiss=use_faiss,
    )
    for stored, width in ((index._first.vectors(), 16), (index._views[0], 48)):
        codes = keras_mrl.serving.quantize(
            unit(corpus[:, :width]),
            precision="int8",
            calibration=unit(calibration[:, :width]),
        )
        assert stored.dtype == np.uint8
        np.testing.assert_array_equal(stored.astype(int) - 128, codes)


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_int8_rescoring_matches_the_numpy_reference(use_faiss):
    corpus, queries = data()
    calibration = data(n=60, seed=2)[0]
    # A shortlist of the whole corpus leaves the int8 stage to rank alone.
    index = FunnelIndex(
        corpus,
        stage_dims=(8, 48),
        shortlist=(len(corpus),),
        precisions=("binary", "int8"),
        calibration=calibration,
        use_faiss=use_faiss,
    )
    scores, ids = index.search(queries, k=10)
    full = int8_scores_reference(queries, corpus, 48, calibration)
    assert_best_by(scores, ids, full, 10)
    np.testing.assert_array_equal(
        ids, np.argsort(-full, axis=1, kind="stable")[:, :10]
    )


def test_calibration_changes_the_int8_steps():
    corpus, queries = data()
    calibration = data(n=60, seed=2)[0] * 3.0
    own = FunnelIndex(
        corpus,
        stage_dims=(48,),
        shortlist=(),
        use_faiss=False,
        precisions=("int8",),
    )
    wide = FunnelIndex(
        corpus,
        stage_dims=(48,),
        shortlist=(),
        use_faiss=False,
        precisions=("int8",),
        calibration=calibration,
    )
    assert not np.array_equal(own._first.vectors(), wide._first.vectors())
    scores, ids = wide.search(queries, k=10)
    full = int8_scores_reference(queries, corpus, 48, calibration)
    assert_best_by(scores, ids, full, 10)


@needs_faiss
@pytest.mark.parametrize(
    "precisions",
    [("binary", "float32"), ("int8", "float32"), ("binary", "int8")],
)
def test_faiss_and_numpy_paths_agree(precisions):
    corpus, queries = data(n=1000)
    options = dict(
        stage_dims=(16, 48), shortlist=(1000,), precisions=precisions
    )
    on_faiss = FunnelIndex(corpus, use_faiss=True, **options)
    on_numpy = FunnelIndex(corpus, use_faiss=False, **options)
    faiss_first = on_faiss._first.search(*_first_query(on_faiss, queries), 30)
    numpy_first = on_numpy._first.search(*_first_query(on_numpy, queries), 30)
    np.testing.assert_allclose(
        faiss_first[0], numpy_first[0], rtol=1e-5, atol=1e-5
    )
    # The whole corpus shortlisted: ties at stage 0 cannot cut differently.
    a, b = on_faiss.search(queries, k=10), on_numpy.search(queries, k=10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_binary_ties_break_by_id_lowest_first(use_faiss, width):
    # 8 bits have 9 distances: 2,000 rows tie in large groups.
    corpus, queries = data(n=2000, q=20)
    index = FunnelIndex(
        corpus,
        stage_dims=(width,),
        shortlist=(),
        precisions=("binary",),
        use_faiss=use_faiss,
    )
    scores, ids = index.search(queries, k=150)
    distances = hamming_reference(queries, corpus, width)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :150]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(
        scores, width - 2.0 * np.take_along_axis(distances, expected, 1)
    )


@needs_faiss
def test_binary_ties_break_by_id_on_faiss_and_numpy(tmp_path):
    corpus, queries = data(n=2000, q=30)
    options = dict(
        stage_dims=(8, 48), shortlist=(100,), precisions=("binary", "float32")
    )
    built = {
        use_faiss: FunnelIndex(corpus, use_faiss=use_faiss, **options)
        for use_faiss in (True, False)
    }
    first = [
        index._first.search(*_first_query(index, queries), 100)
        for index in built.values()
    ]
    for a, b in zip(*first):
        np.testing.assert_array_equal(a, b)
    expected = built[True].search(queries, k=10)
    for use_faiss, index in built.items():
        path = index.save(tmp_path / f"saved_{use_faiss}")
        for loaded_on in (True, False):
            loaded = FunnelIndex.load(path, use_faiss=loaded_on)
            assert loaded.uses_faiss == loaded_on
            scores, ids = loaded.search(queries, k=10)
            np.testing.assert_array_equal(ids, expected[1])
            np.testing.assert_allclose(
                scores, expected[0], rtol=1e-5, atol=1e-6
            )


def _first_query(index, queries):
    first = index._prefixes(queries)[0]
    if index.precisions[0] == "binary":
        first = keras_mrl.retrieval._codes.encode(first, "binary")
    return (first,)


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_numpy_scan_in_small_blocks_keeps_the_best(precision, monkeypatch):
    corpus, queries = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(16,),
        shortlist=(),
        precisions=(precision,),
        use_faiss=False,
    )
    # A few corpus rows per block, merged block by block.
    monkeypatch.setattr(_first_stage, "_SCORE_BYTES", 4 * 9 * 130)
    scores, ids = index.search(queries, k=120)
    if precision == "int8":
        full = int8_scores_reference(queries, corpus, 16)
    else:
        full = 16 - 2.0 * hamming_reference(queries, corpus, 16)
    assert_best_by(scores, ids, full, 120)


@pytest.mark.parametrize(
    "dims, precisions, per_stage",
    [
        ((256, 384), ("binary", "float32"), (32, 1536)),
        ((64, 384), ("binary", "int8"), (8, 384)),
        ((32, 384), ("int8", "float32"), (32, 1536)),
        ((8, 16, 48), ("float32", "int8", "float32"), (32, 16, 192)),
        ((32, 384), None, (128, 1536)),
    ],
)
def test_bytes_per_vector(dims, precisions, per_stage):
    corpus = np.random.default_rng(0).normal(size=(40, 384))
    index = FunnelIndex(
        corpus,
        stage_dims=dims,
        shortlist=(20,) * (len(dims) - 1),
        precisions=precisions,
        use_faiss=False,
    )
    assert index.bytes_per_vector == per_stage
    assert index.total_bytes_per_vector == sum(per_stage)
    stored = [index._first.vectors(), *index._views]
    assert tuple(s.nbytes // len(corpus) for s in stored) == per_stage


def test_default_precisions_are_float32():
    corpus, queries = data()
    default = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(60,), use_faiss=False
    )
    explicit = FunnelIndex(
        corpus,
        stage_dims=(8, 48),
        shortlist=(60,),
        precisions=["float32", "float32"],
        use_faiss=False,
    )
    assert default.precisions == ("float32", "float32")
    assert default.get_config() == explicit.get_config()
    assert default.get_config()["precisions"] == ["float32", "float32"]
    for a, b in zip(
        default.search(queries, k=5), explicit.search(queries, k=5)
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "use_faiss, kind, precisions",
    [
        pytest.param(
            None,
            "flat",
            ("binary", "float32"),
            id="faiss-binary",
            marks=needs_faiss,
        ),
        pytest.param(
            None,
            "hnsw",
            ("binary", "int8"),
            id="faiss-binary-hnsw",
            marks=needs_faiss,
        ),
        pytest.param(
            None,
            "flat",
            ("int8", "float32"),
            id="faiss-int8",
            marks=needs_faiss,
        ),
        pytest.param(False, "flat", ("binary", "int8"), id="numpy-binary"),
        pytest.param(False, "flat", ("int8", "int8"), id="numpy-int8"),
    ],
)
def test_save_load_round_trip(tmp_path, use_faiss, kind, precisions):
    corpus, queries = data()
    calibration = data(n=30, seed=3)[0] if "int8" in precisions else None
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(80,),
        precisions=precisions,
        calibration=calibration,
        index=kind,
        use_faiss=use_faiss,
    )
    path = index.save(tmp_path / "index")
    with np.load(path) as saved:
        header = json.loads(str(saved["header"]))
        assert saved["prefix_16"].dtype == (
            np.float32 if precisions[0] == "float32" else np.uint8
        )
        assert saved["prefix_16"].shape[1] == (
            2 if precisions[0] == "binary" else 16
        )
        ranges = {key for key in saved.files if key.startswith("ranges_")}
        assert ("first_stage_state" in saved) == (
            kind == "hnsw" and use_faiss is None
        )
    assert header["version"] == 1
    assert header["config"]["precisions"] == list(precisions)
    assert ranges == {
        f"ranges_{d}" for d, p in zip((16, 48), precisions) if p == "int8"
    }
    loaded = FunnelIndex.load(path)
    assert loaded.get_config() == index.get_config()
    assert loaded.bytes_per_vector == index.bytes_per_vector
    for a, b in zip(loaded.search(queries, k=10), index.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)
    # Added rows are encoded with the saved ranges, not new ones. (An HNSW
    # graph draws the levels of new nodes at random, so its answers after
    # an add may differ; the flat stages' may not.)
    if kind == "hnsw":
        return
    more = data(n=20, seed=4)[0] * 2.0
    loaded.add(more)
    index.add(more)
    for a, b in zip(loaded.search(queries, k=10), index.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_add_matches_one_build_with_fixed_calibration(use_faiss):
    corpus, queries = data()
    calibration = data(n=50, seed=5)[0]
    options = dict(
        stage_dims=(16, 48),
        shortlist=(100,),
        precisions=("int8", "int8"),
        calibration=calibration,
        use_faiss=use_faiss,
    )
    whole = FunnelIndex(corpus, **options)
    grown = FunnelIndex(corpus[:150], **options)
    grown.add(corpus[150:])
    for a, b in zip(grown.search(queries, k=10), whole.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)


def test_from_config_takes_a_calibration():
    corpus, queries = data()
    calibration = data(n=50, seed=6)[0]
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(60,),
        precisions=("int8", "float32"),
        calibration=calibration,
        use_faiss=False,
    )
    again = FunnelIndex.from_config(
        index.get_config(), corpus_embeddings=corpus, calibration=calibration
    )
    np.testing.assert_array_equal(
        again._first.vectors(), index._first.vectors()
    )
    # Without one, the corpus calibrates.
    own = FunnelIndex.from_config(index.get_config(), corpus_embeddings=corpus)
    assert not np.array_equal(own._first.vectors(), index._first.vectors())


def _rewrite(path, **changes):
    with np.load(path) as data_:
        arrays = {key: data_[key] for key in data_.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _edit_header(path, edit):
    with np.load(path) as data_:
        header = json.loads(str(data_["header"]))
    edit(header)
    _rewrite(path, header=np.array(json.dumps(header)))


def _saved(tmp_path):
    corpus, _ = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(60,),
        precisions=("binary", "int8"),
        use_faiss=False,
    )
    return index.save(tmp_path / "index.npz")


def _precisions(value):
    def edit(header):
        header["config"]["precisions"] = value

    return edit


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda p: _rewrite(p, prefix_16=np.zeros((400, 16), "float32")),
            r"`prefix_16` holds a float32 array of shape \(400, 16\), not the "
            r"uint8 \(400, 2\) .* for a binary stage",
        ),
        (
            lambda p: _rewrite(p, prefix_48=np.zeros((400, 48), "int8")),
            r"not the uint8 \(400, 48\) .* for a int8 stage",
        ),
        (lambda p: _rewrite(p, ranges_48=None), "no `ranges_48` entry"),
        (
            lambda p: _rewrite(p, ranges_48=np.zeros((2, 47), "float32")),
            r"`ranges_48` holds a float32 array of shape \(2, 47\)",
        ),
        (
            lambda p: _rewrite(p, ranges_48=np.zeros((2, 48))),
            "`ranges_48` holds a float64 array",
        ),
        (
            lambda p: _rewrite(
                p,
                ranges_48=np.stack([np.ones(48), np.zeros(48)]).astype(
                    "float32"
                ),
            ),
            "minima .* no greater than their maxima",
        ),
        (
            lambda p: _rewrite(
                p, ranges_48=np.full((2, 48), np.nan, "float32")
            ),
            "must hold finite minima",
        ),
        (
            lambda p: _edit_header(p, _precisions(["int8", "binary"])),
            r"`precisions\[1\]` must be one of \['float32', 'int8'\]",
        ),
        (
            lambda p: _edit_header(p, _precisions(["binary"])),
            "one precision per width",
        ),
        (
            lambda p: _edit_header(p, _precisions("binary")),
            "`precisions` must be a tuple of str",
        ),
    ],
)
def test_load_rejects_damaged_quantized_files(tmp_path, damage, match):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(ValueError, match=match) as info:
        FunnelIndex.load(path)
    assert str(info.value).startswith(
        f"Cannot load a FunnelIndex from {path!r}: "
    )


@needs_faiss
def test_load_rejects_a_foreign_binary_hnsw_graph(tmp_path):
    faiss = _first_stage.import_faiss()
    corpus, _ = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(60,),
        precisions=("binary", "float32"),
        index="hnsw",
    )
    path = index.save(tmp_path / "i")
    graph = faiss.serialize_index_binary(faiss.IndexBinaryFlat(16))
    _rewrite(path, first_stage_state=graph)
    with pytest.raises(
        ValueError,
        match="not the IndexBinaryHNSW of the 400 x 16 first-stage bit codes",
    ):
        FunnelIndex.load(path)
    _rewrite(path, first_stage_state=np.frombuffer(b"junk", np.uint8))
    with pytest.raises(ValueError, match="cannot be read by faiss"):
        FunnelIndex.load(path)
    assert len(FunnelIndex.load(path, use_faiss=False)) == 400


def _build(**kwargs):
    args = {
        "corpus_embeddings": data()[0],
        "stage_dims": (16, 48),
        "shortlist": (50,),
        "use_faiss": False,
    }
    args.update(kwargs)
    return FunnelIndex(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precisions": ("binary",)}, "one precision per width"),
        (
            {"precisions": ("int4", "float32")},
            r"`precisions\[0\]` must be one of \['float32', 'int8', 'binary'\]",
        ),
        (
            {"precisions": ("float32", "binary")},
            r"`precisions\[1\]` must be one of \['float32', 'int8'\]",
        ),
        ({"precisions": ("ubinary", "float32")}, r"`precisions\[0\]`"),
        ({"precisions": ("binary", 8)}, r"`precisions\[1\]` must be one"),
        (
            {"stage_dims": (12, 48), "precisions": ("binary", "float32")},
            "multiple of 8; got 12",
        ),
        (
            {"precisions": ("int8", "float32"), "index": "hnsw"},
            "index='hnsw' takes a first-stage precision in "
            r"\['float32', 'binary'\]",
        ),
        (
            {"calibration": np.zeros((5, 48))},
            "`calibration` sets the steps of int8 stages",
        ),
        (
            {
                "precisions": ("int8", "float32"),
                "calibration": np.zeros((5, 32)),
            },
            "`calibration` has width 32, but the corpus has width 48",
        ),
        (
            {"precisions": ("int8", "float32"), "calibration": np.zeros(48)},
            "`calibration` must be a 2-D array",
        ),
        (
            {
                "precisions": ("int8", "float32"),
                "calibration": np.zeros((0, 48)),
            },
            "whose 0 row",
        ),
        # One row (or identical rows) would give every vector one code.
        (
            {"precisions": ("int8", "float32"), "calibration": data()[0][:1]},
            r"int8 stage 0 \(width 16\) measures its per-dimension ranges on "
            r"`calibration`, whose 1 row\(s\) leave them empty",
        ),
        (
            {
                "precisions": ("float32", "int8"),
                "calibration": np.repeat(data()[0][:1], 5, axis=0),
            },
            r"int8 stage 1 \(width 48\).*`calibration`, whose 5 row",
        ),
        (
            {
                "precisions": ("int8", "float32"),
                "corpus_embeddings": data()[0][:1],
            },
            r"`corpus_embeddings`, whose 1 row\(s\) leave them empty",
        ),
        (
            {
                "precisions": ("int8", "float32"),
                "calibration": np.full((5, 48), np.nan),
            },
            "`calibration` holds",
        ),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(**kwargs)


@pytest.mark.parametrize("precisions", ["binary", 8])
def test_precisions_must_be_a_tuple(precisions):
    with pytest.raises(TypeError, match="`precisions` must be a tuple"):
        _build(precisions=precisions)
