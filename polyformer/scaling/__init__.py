"""Scaling laws: fit them to runs, extrapolate, plan compute-optimal training and estimate its cost.

>>> from polyformer.scaling import read_runs, fit_law, plan_compute
>>> fit = fit_law(read_runs("runs.csv"), "chinchilla", bootstrap=1000)   # doctest: +SKIP
>>> plan_compute(fit.law, [1e23])[0].N                                   # doctest: +SKIP
"""

from polyformer.scaling.approaches import (
    AllocationFit,
    IsoflopProfile,
    envelope_approach,
    group_by_budget,
    isoflop_approach,
    parametric_approach,
)
from polyformer.scaling.bootstrap import bootstrap_fit
from polyformer.scaling.cost import (
    CostEstimate,
    Hardware,
    estimate_cost,
    forward_flops_per_token,
    training_flops,
    training_flops_with_attention,
)
from polyformer.scaling.diagnostics import Goodness, goodness_of_fit
from polyformer.scaling.extrapolate import (
    CurveExtrapolation,
    Prediction,
    extrapolate_learning_curves,
    holdout_largest,
    predict_loss,
)
from polyformer.scaling.fit import fit_law
from polyformer.scaling.fit_options import FitOptions
from polyformer.scaling.laws import (
    ChinchillaLaw,
    KaplanCurveLaw,
    KaplanLaw,
    PowerLaw,
    PurePowerLaw,
    ScalingLaw,
    law_from_dict,
    list_laws,
    make_law,
)
from polyformer.scaling.planning import ComputePlan, allocation_exponents, compute_optimal, plan_compute
from polyformer.scaling.result import BootstrapResult, HoldoutReport, ScalingFit
from polyformer.scaling.runs import Runs, read_runs, runs_from_frame, runs_from_records

__all__ = [
    "AllocationFit", "BootstrapResult", "ChinchillaLaw", "ComputePlan", "CostEstimate", "CurveExtrapolation",
    "FitOptions", "Goodness", "Hardware", "HoldoutReport", "IsoflopProfile", "KaplanCurveLaw", "KaplanLaw",
    "PowerLaw", "Prediction", "PurePowerLaw", "Runs", "ScalingFit", "ScalingLaw", "allocation_exponents",
    "bootstrap_fit", "compute_optimal", "envelope_approach", "estimate_cost", "extrapolate_learning_curves",
    "fit_law", "forward_flops_per_token", "goodness_of_fit", "group_by_budget", "holdout_largest",
    "isoflop_approach", "law_from_dict", "list_laws", "make_law", "parametric_approach", "plan_compute",
    "predict_loss", "read_runs", "runs_from_frame", "runs_from_records", "training_flops",
    "training_flops_with_attention",
]
