import numpy as np
import pytest

from keras_mrl import retrieval
from keras_mrl.retrieval import FunnelIndex

HAS_FAISS = retrieval._import_faiss() is not None
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
    index = FunnelIndex(corpus, dims, shortlist, normalize=normalize,
                        use_faiss=use_faiss)
    assert index.uses_faiss == (use_faiss is None)
    scores, ids = index.search(queries, k=10)
    ref_scores, ref_ids = brute_force(corpus, queries, dims[-1], 10,
                                      normalize)
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
    index = FunnelIndex(corpus, dims=(1, 2, 4), shortlist=(3, 2),
                        normalize=False, use_faiss=use_faiss)
    # Width 1 keeps rows 0, 1, 2 (scores 5, 4, 3; row 4, best at full width
    # with 19, is cut). Width 2 keeps rows 1, 0 (7, 5; row 2 scores 3 and
    # is cut, though it would score 12 at width 4). Width 4: 7, 5.
    scores, ids = index.search(query, k=2)
    np.testing.assert_array_equal(ids, [[1, 0]])
    np.testing.assert_allclose(scores, [[7.0, 5.0]])


def test_numpy_fallback_without_faiss(monkeypatch):
    monkeypatch.setattr(retrieval, "_import_faiss", lambda: None)
    corpus, queries = data()
    index = FunnelIndex(corpus, (8, 48), (len(corpus),), index="hnsw")
    assert not index.uses_faiss
    # Without faiss an "hnsw" first stage is the exact numpy one.
    _, ids = index.search(queries, 5)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 5, True)[1]
    )
    with pytest.raises(ImportError, match="pip install keras-mrl"):
        FunnelIndex(corpus, (8, 48), (50,), use_faiss=True)


@needs_faiss
def test_hnsw_first_stage_finds_neighbours():
    corpus, queries = data(n=2000, q=20)
    index = FunnelIndex(corpus, (16, 48), (200,), index="hnsw", hnsw_m=32,
                        ef_construction=200)
    assert index.uses_faiss
    _, ids = index.search(queries, 10)
    # Against the same funnel on an exact first stage: random data are not
    # Matryoshka, so only the HNSW approximation is measured here.
    exact = FunnelIndex(corpus, (16, 48), (200,)).search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact)])
    assert recall / 10 > 0.9


def test_zero_prefix_scores_zero_instead_of_nan():
    corpus, queries = data()
    corpus[3, :8] = 0.0
    index = FunnelIndex(corpus, (8, 48), (300,), use_faiss=False)
    stage = index._first.vectors
    np.testing.assert_array_equal(stage[3], np.zeros(8))
    np.testing.assert_allclose(
        np.linalg.norm(np.delete(stage, 3, axis=0), axis=1), 1.0, rtol=1e-6
    )
    assert stage.dtype == np.float32 and stage.flags.c_contiguous
    scores, _ = index.search(queries, 300)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_small_chunks_give_the_same_answer(use_faiss, monkeypatch):
    corpus, queries = data()
    index = FunnelIndex(corpus, (8, 16, 48), (120, 40), use_faiss=use_faiss)
    expected = index.search(queries, 10)
    # A few hundred bytes force one query (or a few) per chunk.
    monkeypatch.setattr(retrieval, "_GATHER_BYTES", 4 * 40 * 16 * 2)
    monkeypatch.setattr(retrieval, "_SCORE_BYTES", 4 * 300 * 3)
    for a, b in zip(index.search(queries, 10), expected):
        np.testing.assert_array_equal(a, b)


# The reranking's scorer: faiss in place, or numpy's gather and product.
RERANKERS = [
    pytest.param("faiss", id="faiss", marks=needs_faiss),
    pytest.param(None, id="numpy"),
]


def reranker(name):
    return retrieval._import_faiss() if name else None


@pytest.mark.parametrize("scorer", RERANKERS)
def test_rerank_keeps_padding_last(scorer):
    view = np.eye(4, dtype="float32")
    queries = np.array([[1.0, 0.5, 0.0, 0.0]], dtype="float32")
    ids = np.array([[-1, 1, 0, -1]])
    scores, kept = retrieval._rerank(view, queries, ids, 3, reranker(scorer))
    np.testing.assert_array_equal(kept, [[0, 1, -1]])
    np.testing.assert_array_equal(scores, [[1.0, 0.5, -np.inf]])


@pytest.mark.parametrize("scorer", RERANKERS)
def test_rerank_matches_brute_force(scorer):
    rng = np.random.default_rng(3)
    view = rng.normal(size=(500, 24)).astype("float32")
    queries = rng.normal(size=(9, 24)).astype("float32")
    ids = np.stack([rng.choice(500, 60, replace=False) for _ in range(9)])
    scores, kept = retrieval._rerank(view, queries, ids, 5, reranker(scorer))
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
    faiss = retrieval._import_faiss()
    saved = faiss.cvar.distance_compute_blas_threshold
    corpus, queries = data()
    index = FunnelIndex(corpus, (8, 48), (50,))
    recorder = _RecordingIndex(index._first.index, faiss)
    index._first.index = recorder
    try:
        faiss.cvar.distance_compute_blas_threshold = before
        index.search(queries, 5)
        after = faiss.cvar.distance_compute_blas_threshold
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved
    # Lowered to 20 for the search (a lower setting is kept), then restored.
    assert recorder.seen == [min(before, 20)]
    assert after == before


@pytest.mark.parametrize("use_faiss", FIRST_STAGES)
def test_add_matches_one_build(use_faiss):
    corpus, queries = data()
    whole = FunnelIndex(corpus, (8, 48), (100,), use_faiss=use_faiss)
    grown = FunnelIndex(corpus[:120], (8, 48), (100,), use_faiss=use_faiss)
    grown.add(corpus[120:200])
    grown.add(corpus[200:])
    assert len(grown) == len(whole) == len(corpus)
    for a, b in zip(grown.search(queries, 10), whole.search(queries, 10)):
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
    index = FunnelIndex(corpus, (8, 16, 48), (60, 30), index=kind,
                        normalize=False, hnsw_m=8, ef_search=20,
                        use_faiss=use_faiss)
    path = tmp_path / "index.npz"
    index.save(path)
    with np.load(path) as saved:
        assert ("faiss_index" in saved) == (kind == "hnsw")
    loaded = FunnelIndex.load(path)
    assert loaded.get_config() == index.get_config()
    assert loaded.uses_faiss == index.uses_faiss
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    loaded.add(corpus[:5])
    assert len(loaded) == len(corpus) + 5


@pytest.mark.parametrize("name", ["index", "index.npz", "index.v2"])
def test_load_reads_the_path_given_to_save(tmp_path, name):
    corpus, queries = data()
    index = FunnelIndex(corpus, (8, 48), (50,), use_faiss=False)
    written = index.save(tmp_path / name)
    # As numpy's savez: `.npz` is appended unless the name ends in it.
    expected = name if name.endswith(".npz") else name + ".npz"
    assert written == str(tmp_path / expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected]
    loaded = FunnelIndex.load(tmp_path / name)
    for a, b in zip(loaded.search(queries, 5), index.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    # A file renamed to exactly the given path is read as it is.
    (tmp_path / expected).rename(tmp_path / "renamed")
    assert len(FunnelIndex.load(str(tmp_path / "renamed"))) == len(corpus)


@needs_faiss
def test_load_hnsw_without_faiss(tmp_path):
    corpus, queries = data()
    FunnelIndex(corpus, (8, 48), (300,), index="hnsw").save(tmp_path / "i")
    loaded = FunnelIndex.load(tmp_path / "i", use_faiss=False)
    assert not loaded.uses_faiss
    _, ids = loaded.search(queries, 5)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 5, True)[1]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": (16, 8)}, "strictly increasing"),
        ({"dims": (8, 64)}, "wider than"),
        ({"dims": (8, 16, 48), "shortlist": (50,)}, "one count per stage"),
        ({"shortlist": (50, 20)}, "one count per stage"),
        ({"dims": (8, 16, 48), "shortlist": (20, 50)}, "must not grow"),
        ({"shortlist": (0,)}, "positive"),
        ({"index": "ivf"}, "one of"),
        ({"hnsw_m": 0}, "positive"),
        ({"ef_search": 0}, "positive"),
        ({"use_faiss": "yes"}, "use_faiss"),
        ({"corpus_embeddings": np.zeros(48)}, "2-D"),
        ({"corpus_embeddings": np.zeros((0, 48))}, "at least 1 row"),
        ({"corpus_embeddings": np.full((3, 48), np.nan)}, "NaN"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"corpus_embeddings": data()[0], "dims": (8, 48),
            "shortlist": (50,), "use_faiss": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FunnelIndex(**args)


@pytest.mark.parametrize(
    "queries, k, match",
    [
        (np.zeros((2, 32)), 5, "width 32, but the corpus has width 48"),
        (np.zeros(48), 5, "2-D"),
        (np.zeros((2, 48)), 301, "exceeds the corpus size 300"),
        (np.zeros((2, 48)), 51, "exceeds the last shortlist 50"),
        (np.zeros((2, 48)), 0, "positive"),
    ],
)
def test_search_errors(queries, k, match):
    index = FunnelIndex(data()[0], (8, 48), (50,), use_faiss=False)
    with pytest.raises(ValueError, match=match):
        index.search(queries, k)


def test_non_int_counts_raise_type_error():
    index = FunnelIndex(data()[0], (8, 48), (50,), use_faiss=False)
    with pytest.raises(TypeError, match="`k` must be an int, got 2.5"):
        index.search(np.zeros((2, 48)), 2.5)
    with pytest.raises(TypeError, match="`hnsw_m` must be an int"):
        FunnelIndex(data()[0], (8, 48), (50,), hnsw_m="8", use_faiss=False)


def test_shortlist_longer_than_corpus_keeps_everything():
    corpus, queries = data(n=40)
    index = FunnelIndex(corpus, (8, 48), (1000,), use_faiss=False)
    _, ids = index.search(queries, 40)
    np.testing.assert_array_equal(
        ids, brute_force(corpus, queries, 48, 40, True)[1]
    )
