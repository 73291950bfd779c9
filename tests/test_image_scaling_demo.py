"""The demo's image-model sweep section, quick mode: runs in the store, the fitted L(N) in the text."""

import re

from polyformer.demo.report import Report
from polyformer.scaling.store import RunStore, read_store_runs

PNG = b"\x89PNG\r\n\x1a\n"


def test_quick_image_sweep_section(tmp_path):
    from polyformer.demo import image_scaling_section

    report = Report(tmp_path)
    image_scaling_section.add_section(report, quick=True)
    page = report.write().read_text()
    assert "a sweep of image models (ViT on MNIST)" in page
    assert (tmp_path / "image_scaling_sweep.png").read_bytes()[:8] == PNG
    with RunStore(tmp_path / "vision-sweep" / "runs.sqlite") as store:
        runs = store.runs(sweep="quick", status="finished")
    assert len(runs) == 4 and all(f"{r.params_non_embedding:,}" in page for r in runs)
    assert {r.config["model"]["family"] for r in runs} == {"vit"}
    law = re.search(r"L\(N\) = ([0-9.]+) \+ \(([0-9.e+]+) / N\)\^([0-9.-]+)", page)
    assert law, "the fitted law is printed"
    assert len(read_store_runs(tmp_path / "vision-sweep" / "runs.sqlite")) == 4
