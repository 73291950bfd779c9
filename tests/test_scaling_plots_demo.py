"""Figures are written (atomically, as PNG) for each kind of law, and the demo section runs quickly."""

import re

import pytest

from polyformer.demo.report import Report
from polyformer.scaling import FitOptions, fit_law, isoflop_approach, parametric_approach
from polyformer.scaling.laws import ChinchillaLaw, KaplanCurveLaw, PowerLaw
from polyformer.scaling.plots import plot_fit
from polyformer.scaling.synthetic import isoflop_runs, sample_runs

PNG = b"\x89PNG\r\n\x1a\n"
GRID = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "e": (-1.0, 0.0, 1.0), "alpha": (0.0, 1.0, 2.0), "beta": (0.0, 1.0, 2.0)}


def test_chinchilla_figure_with_isoflop_and_frontier(tmp_path):
    law = ChinchillaLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.37)
    runs = isoflop_runs(law, per_budget=7, noise=0.005)
    fit = fit_law(runs, "chinchilla", FitOptions(grid=GRID))
    allocation, profiles = isoflop_approach(runs)
    path = plot_fit(runs, fit, tmp_path / "sub" / "fit.png", profiles=profiles,
                    allocations=[allocation, parametric_approach(fit.law)])
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["fit.png"]  # no temporary file left behind


@pytest.mark.parametrize("law", [PowerLaw(variable="N", E=1.5, X0=1e5, alpha=0.3),
                                 KaplanCurveLaw(N_c=6.5e13, S_c=2.1e3, alpha_N=0.076, alpha_S=0.76)])
def test_figures_for_other_laws(tmp_path, law):
    runs = sample_runs(law, 40, noise=0.01)
    fit = fit_law(runs, law.name, **law.context())
    assert plot_fit(runs, fit, tmp_path / "fit.png").read_bytes()[:8] == PNG


def test_demo_section_quick(tmp_path):
    from polyformer.demo import scaling_section

    report = Report(tmp_path)
    scaling_section.add_section(report, quick=True)
    page = report.write().read_text()
    assert (tmp_path / "scaling_chinchilla_fit.png").read_bytes()[:8] == PNG
    assert "GPT-3" in page and "$4.67M" in page and "355.6" in page
    # the fitted E is shown beside Besiroglu et al.'s 1.817
    first_row = re.search(r"<tr><td>E</td><td>([0-9.]+)</td>", page)
    assert first_row and abs(float(first_row.group(1)) - 1.817) < 0.03
