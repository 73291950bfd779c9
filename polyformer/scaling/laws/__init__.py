"""Parametric scaling laws: each knows its parameters, predicts, and serialises to JSON."""

from polyformer.scaling.laws.base import VARIABLES, ScalingLaw, grid_bounds, theta_grid
from polyformer.scaling.laws.chinchilla import ChinchillaLaw
from polyformer.scaling.laws.kaplan import KaplanCurveLaw, KaplanLaw
from polyformer.scaling.laws.power import PowerLaw, PurePowerLaw
from polyformer.scaling.laws.registry import law_class, law_from_dict, list_laws, make_law, register_law

__all__ = [
    "VARIABLES",
    "ChinchillaLaw",
    "KaplanCurveLaw",
    "KaplanLaw",
    "PowerLaw",
    "PurePowerLaw",
    "ScalingLaw",
    "grid_bounds",
    "law_class",
    "law_from_dict",
    "list_laws",
    "make_law",
    "register_law",
    "theta_grid",
]
