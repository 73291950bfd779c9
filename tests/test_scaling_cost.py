"""Training FLOPs, time and cost: the chapter's GPT-3 figure from its published assumptions."""

import pytest

from polyformer.errors import ConfigError
from polyformer.scaling import Hardware, estimate_cost, forward_flops_per_token, plan_compute, training_flops
from polyformer.scaling import training_flops_with_attention
from polyformer.scaling import references as ref


def test_gpt3_cost_from_published_assumptions():
    flops = training_flops(ref.GPT3_PARAMS, ref.GPT3_TOKENS)
    assert flops == pytest.approx(3.14e23, rel=0.005)  # 6 N D = 3.15e23 vs 3.14e23 published
    v100 = Hardware(peak_flops=ref.V100_SUSTAINED_FLOPS, price_per_hour=ref.V100_PRICE_PER_HOUR)
    estimate = estimate_cost(ref.GPT3_PUBLISHED_FLOPS, v100)
    # by hand: 3.14e23 / 28e12 s = 1.1214e10 s = 3.115e6 GPU-hours = 355.6 GPU-years; x $1.5 = $4.67M
    assert estimate.device_seconds == pytest.approx(3.14e23 / 28e12)
    assert estimate.device_years == pytest.approx(355.6, abs=0.1)
    assert estimate.device_years == pytest.approx(ref.GPT3_PUBLISHED_GPU_YEARS, rel=0.01)
    assert estimate.cost == pytest.approx(3.14e23 / 28e12 / 3600 * 1.5)
    assert estimate.cost == pytest.approx(ref.GPT3_PUBLISHED_COST, rel=0.02)  # "~$4.6M"


def test_attention_flops_and_hardware_scaling():
    # Kaplan et al. Table 1 per token: forward 2N + 2 n_layer n_ctx d_attn; training = 3x forward
    per_token = forward_flops_per_token(175e9, 96, 2048, 12288)
    assert per_token == 2 * 175e9 + 2 * 96 * 2048 * 12288
    total = training_flops_with_attention(175e9, 300e9, 96, 2048, 12288)
    assert total == pytest.approx(3 * 300e9 * per_token)
    assert total / training_flops(175e9, 300e9) == pytest.approx(1 + 96 * 2048 * 12288 / 175e9)
    hw = Hardware(peak_flops=312e12, utilisation=0.5, count=1000, price_per_hour=2.0, power_watts=400, energy_price_per_kwh=0.1)
    est = estimate_cost(1e24, hw)
    assert est.device_hours == pytest.approx(1e24 / 156e12 / 3600)
    assert est.wall_clock_days == pytest.approx(est.device_hours / 1000 / 24)
    assert est.energy_kwh == pytest.approx(0.4 * est.device_hours)
    assert est.energy_cost == pytest.approx(0.1 * est.energy_kwh)
    assert estimate_cost(1e24, Hardware(peak_flops=1e12)).cost is None


@pytest.mark.parametrize("kwargs,message", [
    ({"peak_flops": 0}, "peak_flops"),
    ({"peak_flops": 1e12, "utilisation": 1.5}, "utilisation"),
    ({"peak_flops": 1e12, "count": 0}, "count"),
    ({"peak_flops": 1e12, "price_per_hour": -1.0}, "price_per_hour"),
])
def test_bad_hardware(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Hardware(**kwargs)


def test_bad_flops_inputs():
    with pytest.raises(ConfigError, match="tokens"):
        training_flops(1e9, -1.0)
    with pytest.raises(ConfigError, match="n_layer"):
        forward_flops_per_token(1e9, 0, 2048, 1024)


def test_compute_optimal_plan_is_about_twenty_tokens_per_parameter():
    plans = plan_compute(ref.EPOCH_CHINCHILLA, [1e21, 3.14e23, 1e25])
    for plan in plans:
        assert 15 <= plan.tokens_per_parameter <= 25
        assert 6 * plan.N * plan.D == pytest.approx(plan.flops)
        assert plan.loss == pytest.approx(float(ref.EPOCH_CHINCHILLA.predict(N=plan.N, D=plan.D)))
    # the compute-optimal model for GPT-3's budget beats GPT-3's allocation under the same law
    gpt3_loss = float(ref.EPOCH_CHINCHILLA.predict(N=ref.GPT3_PARAMS, D=ref.GPT3_TOKENS))
    assert plans[1].loss < gpt3_loss
    numeric = plan_compute(ref.KAPLAN_JOINT, [1e21])[0]
    assert numeric.method == "closed form"
