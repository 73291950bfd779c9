"""TimeSformer runs with every registered attention mechanism along each axis (read from the registry).

Along space (divided blocks' spatial attention, dense along time), along time (the temporal
attention, dense along space), and over the joint space-time sequence: each mechanism builds,
runs forward and trains one backward step that reaches its projections; the exact mechanisms
(``dense``, ``memory_efficient`` with tiles smaller than the sequence) give the dense outputs.
"""

import pytest
import torch

from polyformer import attention
from polyformer.attention import patterns
from polyformer.errors import PolyformerError
from polyformer.models.timesformer import TimesformerConfig, TimesformerForVideoClassification

# Mechanisms that need an option without a default get an example value here.
REQUIRED_OPTIONS = {"sparse": {"pattern": patterns.Band(4, 4) | patterns.Global([0])}}
EXACT = {"dense": {}, "memory_efficient": {"q_chunk": 3, "k_chunk": 5}}
# (frames, image side): the first a mechanism accepts is used; 4-pixel patches give 1 + 16 or 1 + 64
# tokens per frame, and 8 or 16 frames along time
SIZES = ((8, 16), (16, 32))
AXES = {
    "space": lambda spec: dict(attention=spec, time_attention="dense"),
    "time": lambda spec: dict(attention="dense", time_attention=spec),
    "joint": lambda spec: dict(attention=spec, attention_type="joint_space_time"),
}


def _model(frames, side, **kw):
    kw.setdefault("attention_type", "divided_space_time")
    config = TimesformerConfig(image_size=side, patch_size=4, num_frames=frames, d_model=24, n_layers=1, n_heads=3,
                               d_ff=32, num_labels=3, **kw)
    return TimesformerForVideoClassification(config)


@pytest.mark.parametrize("axis", list(AXES))
@pytest.mark.parametrize("name", attention.list())
def test_trains_with_every_mechanism_along_each_axis(name, axis):
    spec = attention.AttentionSpec(name, REQUIRED_OPTIONS.get(name, {}))
    refusals = []
    for frames, side in SIZES:
        torch.manual_seed(0)
        model = _model(frames, side, **AXES[axis](spec)).train()
        block = model.timesformer.encoder.layers[0]
        if axis != "joint":  # a live temporal branch, so the gradient reaches temporal attention
            torch.nn.init.normal_(block.time_proj.weight, std=0.2)
        try:
            out = model(torch.randn(2, frames, 3, side, side), labels=torch.tensor([0, 2]))
            break
        except PolyformerError as error:  # a refusal must be a clear error, e.g. a length rule
            refusals.append(f"{frames} frames of {side}px: {error}")
    else:
        pytest.skip(f"{name} refuses every size along {axis}:\n" + "\n".join(refusals))
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    attn = block.time_attn if axis == "time" else block.attn
    assert attn.mechanism.name == name
    assert attn.q_proj.weight.grad.abs().sum() > 0
    assert model.timesformer.embeddings.projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("axis", list(AXES))
@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_mechanisms_give_the_dense_output(name, axis):
    dense = _model(8, 16, **AXES[axis]("dense")).eval()
    if axis != "joint":  # a live temporal branch, so the time axis counts
        torch.nn.init.normal_(dense.timesformer.encoder.layers[0].time_proj.weight, std=0.2)
    other = _model(8, 16, **AXES[axis](attention.AttentionSpec(name, EXACT[name]))).eval()
    other.load_state_dict(dense.state_dict())
    x = torch.randn(2, 8, 3, 16, 16)
    with torch.no_grad():
        expected, got = dense(x, output_hidden_states=True), other(x, output_hidden_states=True)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.hidden_states[-1], expected.hidden_states[-1], atol=1e-5, rtol=1e-5)
