import json
import zipfile

import numpy as np
import pytest

from keras_mrl.retrieval import FunnelIndex
from keras_mrl.retrieval import _first_stage
from keras_mrl.retrieval import _rerank

pytestmark = pytest.mark.once

HAS_FAISS = _first_stage.import_faiss() is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
# None runs the first stage on faiss (when installed), False on numpy.
FIRST_STAGES = [
    pytest.param(None, id="faiss", marks=needs_faiss),
    pytest.param(False, id="numpy"),
]


def data(n=300, q=7, d=48, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d)).astype("float32"),
        rng.normal(size=(q, d)).astype("float32"),
    )


def brute_force(corpus, queries, width, k, normalize):
    """Top-k by the cosine (or inner product) of the `width` prefixes."""
    c, q = corpus[:, :width].astype("float64"), queries[:, :width]
    if normalize:
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ c.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dims", [(8, 48), (4, 16, 32)])
def test_exact_when_shortlist_is_corpus(use_faiss, normalize, dims):
    corpus, queries = data()
    shortlist = (len(corpus),) * (len(dims) - 1)
    index = FunnelIndex(
        corpus,
        stage_dims=dims,
        shortlist=shortlist,
        normalize=normalize,
        use_faiss=use_faiss,
    )
    assert index.uses_faiss == (use_faiss is None)
    scores, ids = index.search(queries, k=10)
    ref_scores, ref_ids = brute_force(corpus, queries, dims[-1], 10, normalize)
    assert scores.shape == ids.shape == (7, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_hand_checked_funnel(use_faiss):
    corpus = np.array(
        [
            [5, 0, 0, 0],
            [4, 3, 0, 0],
            [3, 0, 9, 0],
            [2, 5, 0, 0],
            [1, 9, 9, 9],
        ],
        dtype="float32",
    )
    query = np.array([[1, 1, 1, 0]], dtype="float32")
    index = FunnelIndex(
        corpus,
        stage_dims=(1, 2, 4),
        shortlist=(3, 2),
        normalize=False,
        use_faiss=use_faiss,
    )
    # Width 1 keeps rows 0, 1, 2 (scores 5, 4, 3; row 4, best at full width
    # with 19, is cut). Width 2 keeps rows 1, 0 (7, 5; row 2 scores 3 and
    # is cut, though it would score 12 at width 4). Width 4: 7, 5.
    scores, ids = index.search(query, k=2)
    np.testing.assert_array_equal(ids, [[1, 0]])
    np.testing.assert_allclose(scores, [[7.0, 5.0]])


def test_numpy_fallback_without_faiss(monkeypatch):
    monkeypatch.setattr(_first_stage, "import_faiss", lambda: None)
    corpus, queries = data()
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(len(corpus),), index="hnsw"
    )
    assert not index.uses_faiss
    # Without faiss an "hnsw" first stage is the exact numpy one.
    _, ids = index.search(queries, k=5)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 5, True)[1]
    )
    with pytest.raises(ImportError, match="pip install keras-mrl"):
        FunnelIndex(corpus, stage_dims=(8, 48), shortlist=(50,), use_faiss=True)


@needs_faiss
def test_hnsw_first_stage_finds_neighbours():
    corpus, queries = data(n=2000, q=20)
    index = FunnelIndex(
        corpus,
        stage_dims=(16, 48),
        shortlist=(200,),
        index="hnsw",
        hnsw_m=32,
        ef_construction=200,
    )
    assert index.uses_faiss
    _, ids = index.search(queries, k=10)
    # Against the same funnel on an exact first stage: random data are not
    # Matryoshka, so only the HNSW approximation is measured here.
    exact = FunnelIndex(corpus, stage_dims=(16, 48), shortlist=(200,)).search(
        queries, k=10
    )[1]
    recall = np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact)])
    assert recall / 10 > 0.9


def test_zero_prefix_scores_zero_instead_of_nan():
    corpus, queries = data()
    corpus[3, :8] = 0.0
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(300,), use_faiss=False
    )
    stage = index._first.vectors()
    np.testing.assert_array_equal(stage[3], np.zeros(8))
    np.testing.assert_allclose(
        np.linalg.norm(np.delete(stage, 3, axis=0), axis=1), 1.0, rtol=1e-6
    )
    assert stage.dtype == np.float32 and stage.flags.c_contiguous
    scores, _ = index.search(queries, k=300)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_small_chunks_give_the_same_answer(use_faiss, monkeypatch):
    corpus, queries = data()
    index = FunnelIndex(
        corpus, stage_dims=(8, 16, 48), shortlist=(120, 40), use_faiss=use_faiss
    )
    expected = index.search(queries, k=10)
    # A few hundred bytes force one query (or a few) per chunk.
    monkeypatch.setattr(_rerank, "_GATHER_BYTES", 4 * 40 * 16 * 2)
    monkeypatch.setattr(_first_stage, "_SCORE_BYTES", 4 * 300 * 3)
    for a, b in zip(index.search(queries, k=10), expected):
        np.testing.assert_array_equal(a, b)


# The reranking's scorer: faiss in place, or numpy's gather and product.
RERANKERS = [
    pytest.param("faiss", id="faiss", marks=needs_faiss),
    pytest.param(None, id="numpy"),
]


def reranker(name):
    return _first_stage.import_faiss() if name else None


@pytest.mark.parametrize("scorer", RERANKERS)
def test_rerank_keeps_padding_last(scorer):
    view = np.eye(4, dtype="float32")
    queries = np.array([[1.0, 0.5, 0.0, 0.0]], dtype="float32")
    ids = np.array([[-1, 1, 0, -1]])
    scores, kept = _rerank.rerank(view, queries, ids, 3, reranker(scorer))
    np.testing.assert_array_equal(kept, [[0, 1, -1]])
    np.testing.assert_array_equal(scores, [[1.0, 0.5, -np.inf]])


@pytest.mark.parametrize("scorer", RERANKERS)
def test_rerank_matches_brute_force(scorer):
    rng = np.random.default_rng(3)
    view = rng.normal(size=(500, 24)).astype("float32")
    queries = rng.normal(size=(9, 24)).astype("float32")
    ids = np.stack([rng.choice(500, 60, replace=False) for _ in range(9)])
    scores, kept = _rerank.rerank(view, queries, ids, 5, reranker(scorer))
    full = np.einsum("qd,qcd->qc", queries.astype("float64"), view[ids])
    order = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(kept, np.take_along_axis(ids, order, 1))
    np.testing.assert_allclose(
        scores, np.take_along_axis(full, order, 1), rtol=1e-5, atol=1e-5
    )


class _RecordingIndex:
    """Stands in for a faiss index and notes the BLAS threshold it sees."""

    def __init__(self, index, faiss):
        self.index, self.faiss, self.seen = index, faiss, []

    def search(self, *args, **kwargs):
        self.seen.append(self.faiss.cvar.distance_compute_blas_threshold)
        return self.index.search(*args, **kwargs)


@needs_faiss
@pytest.mark.parametrize("before", [5, 128_000])
def test_flat_search_takes_the_blas_path_and_restores_faiss(before):
    faiss = _first_stage.import_faiss()
    saved = faiss.cvar.distance_compute_blas_threshold
    corpus, queries = data()
    index = FunnelIndex(corpus, stage_dims=(8, 48), shortlist=(50,))
    recorder = _RecordingIndex(index._first.index, faiss)
    index._first.index = recorder
    try:
        faiss.cvar.distance_compute_blas_threshold = before
        index.search(queries, k=5)
        after = faiss.cvar.distance_compute_blas_threshold
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    # Lowered to 20 for the search (a lower setting is kept), then restored.
    assert recorder.seen == [min(before, 20)]
    assert after == before


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_add_matches_one_build(use_faiss):
    corpus, queries = data()
    options = dict(stage_dims=(8, 48), shortlist=(100,), use_faiss=use_faiss)
    whole = FunnelIndex(corpus, **options)
    grown = FunnelIndex(corpus[:120], **options)
    grown.add(corpus[120:200])
    grown.add(corpus[200:])
    assert len(grown) == len(whole) == len(corpus)
    for a, b in zip(grown.search(queries, k=10), whole.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="width 47"):
        grown.add(corpus[:3, :47])


@pytest.mark.parametrize(
    "use_faiss, kind",
    [
        pytest.param(None, "flat", id="faiss-flat", marks=needs_faiss),
        pytest.param(None, "hnsw", id="faiss-hnsw", marks=needs_faiss),
        pytest.param(False, "flat", id="numpy"),
    ],
)
def test_save_load_round_trip(tmp_path, use_faiss, kind):
    corpus, queries = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(8, 16, 48),
        shortlist=(60, 30),
        index=kind,
        normalize=False,
        hnsw_m=8,
        ef_search=20,
        use_faiss=use_faiss,
    )
    path = tmp_path / "index.npz"
    index.save(path)
    with np.load(path) as saved:
        assert ("first_stage_state" in saved) == (kind == "hnsw")
        header = json.loads(str(saved["header"]))
    assert header["format"] == "keras_mrl.retrieval.FunnelIndex"
    assert header["version"] == 1
    loaded = FunnelIndex.load(path)
    assert loaded.get_config() == index.get_config()
    assert loaded.uses_faiss == index.uses_faiss
    for a, b in zip(loaded.search(queries, k=10), index.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)
    loaded.add(corpus[:5])
    assert len(loaded) == len(corpus) + 5


@pytest.mark.parametrize("name", ["index", "index.npz", "index.v2"])
def test_load_reads_the_path_given_to_save(tmp_path, name):
    corpus, queries = data()
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(50,), use_faiss=False
    )
    written = index.save(tmp_path / name)
    # As numpy's savez: `.npz` is appended unless the name ends in it.
    expected = name if name.endswith(".npz") else name + ".npz"
    assert written == str(tmp_path / expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected]
    loaded = FunnelIndex.load(tmp_path / name)
    for a, b in zip(loaded.search(queries, k=5), index.search(queries, k=5)):
        np.testing.assert_array_equal(a, b)
    # A file renamed to exactly the given path is read as it is.
    (tmp_path / expected).rename(tmp_path / "renamed")
    assert len(FunnelIndex.load(str(tmp_path / "renamed"))) == len(corpus)


@needs_faiss
def test_load_hnsw_without_faiss(tmp_path):
    corpus, queries = data()
    FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(300,), index="hnsw"
    ).save(tmp_path / "i")
    loaded = FunnelIndex.load(tmp_path / "i", use_faiss=False)
    assert not loaded.uses_faiss
    _, ids = loaded.search(queries, k=5)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 5, True)[1]
    )


def _build(**kwargs):
    """A two-stage numpy index over `data()`, with `kwargs` replaced."""
    args = {
        "corpus_embeddings": data()[0],
        "stage_dims": (8, 48),
        "shortlist": (50,),
        "use_faiss": False,
    }
    args.update(kwargs)
    return FunnelIndex(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"stage_dims": (16, 8)}, "strictly increasing"),
        ({"stage_dims": (8, 64)}, "wider than"),
        (
            {"stage_dims": (8, 16, 48), "shortlist": (50,)},
            "one count per stage",
        ),
        ({"shortlist": (50, 20)}, "one count per stage"),
        ({"shortlist": ()}, "one count per stage"),
        ({"stage_dims": (8, 16, 48), "shortlist": (20, 50)}, "must not grow"),
        ({"shortlist": (0,)}, "positive"),
        ({"index": "ivf"}, r"`index` must be one of \['flat', 'hnsw'\]"),
        ({"index": 1}, "`index` must be one of"),
        ({"hnsw_m": 0}, "positive"),
        ({"ef_construction": -1}, "positive"),
        ({"ef_search": 0}, "positive"),
        ({"corpus_embeddings": np.zeros(48)}, "2-D"),
        ({"corpus_embeddings": np.zeros((0, 48))}, "at least 1 row"),
        ({"corpus_embeddings": np.full((3, 48), np.nan)}, "NaN"),
        ({"corpus_embeddings": np.full((3, 48), np.inf)}, "NaN or infinite"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # 0 in (None, True, False) is True: it once meant "use faiss".
        ({"use_faiss": 0}, "`use_faiss` must be None, True or False"),
        ({"use_faiss": 1}, "`use_faiss` must be None, True or False"),
        ({"use_faiss": "yes"}, "`use_faiss` must be None, True or False"),
        ({"normalize": "no"}, "`normalize` must be True or False"),
        ({"normalize": 0}, "`normalize` must be True or False"),
        ({"normalize": None}, "`normalize` must be True or False"),
        ({"shortlist": None}, r"`shortlist` must be a tuple of ints.*\(\)"),
        ({"shortlist": "200"}, "`shortlist` must be a tuple of ints"),
        ({"shortlist": (2.5,)}, r"`shortlist\[0\]` must be an int"),
        ({"shortlist": (True,)}, r"`shortlist\[0\]` must be an int"),
        ({"stage_dims": None}, "`stage_dims` must be a list of ints"),
        ({"hnsw_m": "8"}, "`hnsw_m` must be an int"),
        ({"ef_search": 2.0}, "`ef_search` must be an int"),
    ],
)
def test_constructor_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        _build(**kwargs)


def test_counts_of_every_kind_are_accepted():
    corpus, queries = data()
    # A bare int for a two-stage index, numpy ints, and () for one stage;
    # a shortlist of the whole corpus makes the two-stage ones exact.
    for dims, shortlist in [
        ((8, 48), 300),
        ((8, 48), np.array([300])),
        ((48,), ()),
    ]:
        index = FunnelIndex(
            corpus, stage_dims=dims, shortlist=shortlist, use_faiss=False
        )
        _, ids = index.search(queries, k=5)
        np.testing.assert_array_equal(
            ids, brute_force(corpus, queries, 48, 5, True)[1]
        )
        assert all(type(s) is int for s in index.shortlist)


def test_old_positional_calls_raise_type_error(tmp_path):
    corpus, queries = data()
    with pytest.raises(
        TypeError,
        match="positional argument",
    ):
        FunnelIndex(corpus, (8, 48), (50,))
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(50,), use_faiss=False
    )
    with pytest.raises(TypeError, match="positional argument"):
        index.search(queries, 5)
    path = index.save(tmp_path / "i")
    with pytest.raises(TypeError, match="positional argument"):
        FunnelIndex.load(path, False)
    with pytest.raises(TypeError, match="positional argument"):
        FunnelIndex.from_config(index.get_config(), corpus)


@pytest.mark.parametrize(
    "queries, k, match",
    [
        (np.zeros((2, 32)), 5, "width 32, but the corpus has width 48"),
        (np.zeros(48), 5, "2-D"),
        (np.full((2, 48), np.nan), 5, "`queries` holds 96 NaN"),
        (np.zeros((2, 48)), 301, "exceeds the corpus size 300"),
        (np.zeros((2, 48)), 51, "exceeds the last shortlist 50"),
        (np.zeros((2, 48)), 0, "positive"),
    ],
)
def test_search_errors(queries, k, match):
    index = FunnelIndex(
        data()[0], stage_dims=(8, 48), shortlist=(50,), use_faiss=False
    )
    with pytest.raises(ValueError, match=match):
        index.search(queries, k=k)


def test_non_int_counts_raise_type_error():
    index = FunnelIndex(
        data()[0], stage_dims=(8, 48), shortlist=(50,), use_faiss=False
    )
    with pytest.raises(TypeError, match="`k` must be an int, got 2.5"):
        index.search(np.zeros((2, 48)), k=2.5)


def test_add_rejects_non_finite_embeddings():
    corpus, _ = data()
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(50,), use_faiss=False
    )
    bad = corpus[:4].copy()
    bad[2, 7] = np.inf
    with pytest.raises(ValueError, match="`embeddings` holds 1 NaN"):
        index.add(bad)
    assert len(index) == len(corpus)


def test_shortlist_longer_than_corpus_keeps_everything():
    corpus, queries = data(n=40)
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(1000,), use_faiss=False
    )
    _, ids = index.search(queries, k=40)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 40, True)[1]
    )


def test_from_config_rebuilds_the_index():
    corpus, queries = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(8, 16, 48),
        shortlist=(60, 30),
        normalize=False,
        ef_search=7,
        use_faiss=False,
    )
    again = FunnelIndex.from_config(
        index.get_config(), corpus_embeddings=corpus
    )
    assert again.get_config() == index.get_config()
    for a, b in zip(again.search(queries, k=10), index.search(queries, k=10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="`config` must be a dict"):
        FunnelIndex.from_config([8, 48], corpus_embeddings=corpus)


def _padding_first_stage(index, found):
    """Makes `index`'s first stage return only `found` real candidates."""
    search = index._first.search

    def short_search(queries, count):
        scores, ids = search(queries, count)
        scores[:, found:], ids[:, found:] = -np.inf, -1
        return scores, ids

    index._first.search = short_search


@pytest.mark.parametrize("dims, shortlist", [((8, 48), (50,)), ((48,), ())])
def test_a_short_first_stage_raises_instead_of_padding(dims, shortlist):
    corpus, queries = data()
    index = FunnelIndex(
        corpus, stage_dims=dims, shortlist=shortlist, use_faiss=False
    )
    _padding_first_stage(index, found=4)
    with pytest.raises(
        ValueError,
        match="found only 4 of the .* fewer "
        "than k=5, so the answer would be padded with id -1",
    ):
        index.search(queries, k=5)
    # With at least k found, the later stages rerank what was found.
    scores, ids = index.search(queries, k=4)
    assert (ids >= 0).all() and np.isfinite(scores).all()


@needs_faiss
def test_narrow_hnsw_beam_raises_with_advice():
    corpus, queries = data(n=50)
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(50,), index="hnsw", ef_search=1
    )
    # A beam of 1 in a 50-node graph reaches a handful of nodes, not 50.
    with pytest.raises(ValueError, match="ef_search=1 is too narrow"):
        index.search(queries, k=50)


@needs_faiss
def test_narrow_hnsw_beam_reranks_what_it_found():
    corpus, queries = data(n=2000, q=20)
    index = FunnelIndex(
        corpus, stage_dims=(8, 48), shortlist=(100,), index="hnsw", ef_search=2
    )
    first_ids = index._first.search(index._prefixes(queries)[0], 100)[1]
    # faiss pads: the beam of 2 finds fewer than the 100 asked ...
    assert (first_ids < 0).any()
    # ... and the answer holds only the real ones, best first.
    scores, ids = index.search(queries, k=5)
    assert (ids >= 0).all() and np.isfinite(scores).all()

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cosine = unit(queries.astype("float64")) @ unit(corpus).T
    for q in range(len(queries)):
        found = first_ids[q][first_ids[q] >= 0]
        np.testing.assert_allclose(
            scores[q],
            np.sort(cosine[q, found])[::-1][:5],
            rtol=1e-5,
            atol=1e-5,
        )


def _saved(tmp_path, kind="flat"):
    corpus, _ = data()
    index = FunnelIndex(
        corpus,
        stage_dims=(8, 16, 48),
        shortlist=(60, 30),
        index=kind,
        use_faiss=None if kind == "hnsw" else False,
    )
    return index.save(tmp_path / "index.npz")


def _rewrite(path, **changes):
    """Writes `path` again with entries replaced (None drops one)."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _header(path):
    with np.load(path) as data:
        return json.loads(str(data["header"]))


def _with_header(path, **changes):
    header = _header(path)
    header.update(changes)
    _rewrite(path, header=np.array(json.dumps(header)))


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _corrupt(path):
    # Flip bytes inside the first compressed-or-stored member's data.
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[-1]
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start : start + 64] = bytes(64)
    open(path, "wb").write(bytes(data))


def _config(path, **changes):
    header = _header(path)
    header["config"].update(changes)
    for key, value in changes.items():
        if value is None:
            del header["config"][key]
    _rewrite(path, header=np.array(json.dumps(header)))


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: open(p, "w").write("dims: 8, 48\n"), "not an .npz"),
        (lambda p: np.save(open(p, "wb"), np.zeros(3)), "not an .npz"),
        (_truncate, "not an .npz archive \\(it is truncated"),
        (_corrupt, "entry cannot be read .*the file is corrupt"),
        (
            lambda p: np.savez(p, weights=np.zeros(3)),
            "no `header` entry, so it was not written by FunnelIndex.save",
        ),
        (
            lambda p: _rewrite(p, header=np.array(["a", None], dtype=object)),
            "`header` entry cannot be read",
        ),
        (
            lambda p: _rewrite(p, header=np.array("{not json")),
            "does not carry the format marker",
        ),
        (
            lambda p: _rewrite(p, header=np.zeros(3)),
            "does not carry the format marker",
        ),
        (
            lambda p: _with_header(p, format="other.Index"),
            "does not carry the format marker",
        ),
        (
            lambda p: _with_header(p, version=2),
            "format version 2; this keras_mrl reads version 1",
        ),
        (lambda p: _with_header(p, size="300"), "header's `size` is '300'"),
        (lambda p: _with_header(p, width=0), "header's `width` is 0"),
        (lambda p: _rewrite(p, prefix_16=None), "no `prefix_16` entry"),
        (
            lambda p: _rewrite(p, prefix_16=np.zeros((300, 16))),
            "`prefix_16` holds a float64 array of shape \\(300, 16\\)",
        ),
        (
            lambda p: _rewrite(p, prefix_16=np.zeros((299, 16), "float32")),
            "not the float32 \\(300, 16\\)",
        ),
        (
            lambda p: _rewrite(
                p, prefix_8=np.full((300, 8), np.nan, "float32")
            ),
            "`prefix_8` holds NaN",
        ),
        (
            lambda p: _rewrite(p, first_stage_state=np.zeros(4)),
            "`first_stage_state` must hold 1-D uint8 bytes",
        ),
        (lambda p: _config(p, stage_dims=[16, 8]), "strictly increasing"),
        (
            lambda p: _config(p, stage_dims=None),
            "`stage_dims` must be a list of ints",
        ),
        (lambda p: _config(p, shortlist=[30, 60]), "must not grow"),
        (lambda p: _config(p, normalize="yes"), "`normalize` must be True"),
        (
            lambda p: _config(p, ef_search=None, extra=1),
            r"lacks \['ef_search'\] and has unknown \['extra'\]",
        ),
    ],
)
def test_load_rejects_files_it_did_not_write(tmp_path, damage, match):
    path = _saved(tmp_path)
    damage(path)
    with pytest.raises(ValueError, match=match) as info:
        FunnelIndex.load(path)
    message = str(info.value)
    assert message.startswith(f"Cannot load a FunnelIndex from {path!r}: ")
    assert "allow_pickle" not in message
    # numpy's and zipfile's errors stay out of the chain too.
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@needs_faiss
@pytest.mark.parametrize(
    "graph, match",
    [
        (
            np.frombuffer(b"not a faiss index", np.uint8),
            "cannot be read by faiss",
        ),
        ("flat", "is not the IndexHNSWFlat of the 300 x 8"),
    ],
)
def test_load_rejects_a_foreign_hnsw_graph(tmp_path, graph, match):
    faiss = _first_stage.import_faiss()
    path = _saved(tmp_path, kind="hnsw")
    if isinstance(graph, str):
        graph = faiss.serialize_index(faiss.IndexFlatIP(8))
    _rewrite(path, first_stage_state=graph)
    with pytest.raises(ValueError, match=match):
        FunnelIndex.load(path)
    # Without faiss the graph is not read, and the vectors serve.
    assert len(FunnelIndex.load(path, use_faiss=False)) == 300


def test_load_of_a_missing_file_names_both_paths(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="at .*nothing or .*nothing"
        r"\.npz",
    ):
        FunnelIndex.load(tmp_path / "nothing")


def test_load_checks_its_use_faiss(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(TypeError, match="`use_faiss` must be None, True"):
        FunnelIndex.load(path, use_faiss=0)
