"""Published numbers the library is checked against and uses as defaults."""

from __future__ import annotations

from polyformer.scaling.laws import ChinchillaLaw, KaplanCurveLaw, KaplanLaw

# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt", Table 1: the Chinchilla law
# refitted to the 240 runs digitised from Hoffmann et al.'s Figure 4 (standard errors in brackets:
# E 0.03, A 124.58, B 1293.23, alpha 0.02, beta 0.02).
EPOCH_CHINCHILLA = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
EPOCH_CHINCHILLA_STANDARD_ERRORS = {"E": 0.03, "A": 124.58, "B": 1293.23, "alpha": 0.02, "beta": 0.02}

# Hoffmann et al. 2022, eq. (10), as printed (Besiroglu et al. show it does not fit the data).
HOFFMANN_CHINCHILLA = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)

# Kaplan et al. 2020, eq. (1.5) and (1.6) with Table 2 constants (loss in nats, non-embedding N).
KAPLAN_JOINT = KaplanLaw(N_c=6.4e13, D_c=1.8e13, alpha_N=0.076, alpha_D=0.103)
KAPLAN_CURVE = KaplanCurveLaw(N_c=6.5e13, S_c=2.1e3, alpha_N=0.076, alpha_S=0.76)

# GPT-3 175B (Brown et al. 2020) and the cost estimate the chapter quotes (Lambda Labs 2020):
# 3.14e23 FLOPs on V100s at 28 TFLOP/s sustained, about $1.5 per GPU-hour.
GPT3_PARAMS = 175e9
GPT3_TOKENS = 300e9
GPT3_PUBLISHED_FLOPS = 3.14e23
V100_SUSTAINED_FLOPS = 28e12
V100_PRICE_PER_HOUR = 1.5
GPT3_PUBLISHED_GPU_YEARS = 355.0
GPT3_PUBLISHED_COST = 4.6e6
