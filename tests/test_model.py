"""The batched decoder computes exactly the semantics of DESIGN.md section 2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lab.core.config import RunConfig
from lab.core.model import Decoder, Rates, add_skip, config_losses, count_params, dropout, skip_path, skip_paths

V = 11


def make(configs: list[RunConfig]) -> Decoder:
    return Decoder(configs, V)


def cfg(**kw) -> RunConfig:
    base = dict(n_layer=4, n_head=2, n_embd=8, block_size=6, dropout=0.0, skips={1: 0.0})
    base.update(kw)
    return RunConfig.from_dict(base)


def zero_sublayers(model: Decoder) -> None:
    """Make every f_i output zero: the output projections of attention and MLP are zeroed."""
    with torch.no_grad():
        for layer in model.sublayers:
            layer.f.c_proj.weight.zero_()


def final_stream(model: Decoder, idx: torch.Tensor) -> torch.Tensor:
    """h_L, the stream entering the final LayerNorm: [N, B*T, C]."""
    seen = {}
    hook = model.ln_f.register_forward_hook(lambda m, inp, out: seen.setdefault("h", inp[0]))
    model(idx)
    hook.remove()
    return seen["h"]


@pytest.mark.parametrize("norm", ["pre", "stream"])
@pytest.mark.parametrize("convention", ["paper", "inverted"])
@pytest.mark.parametrize("skips", [{1: 0.1}, {1: 0.1, 2: 0.3, 4: 0.5}, {2: 0.0}, {1: 0.0, 8: 0.2}, {4: 0.25}])
def test_with_every_sublayer_zeroed_the_output_is_the_sum_of_skip_terms(norm, convention, skips):
    c = cfg(norm=norm, skip_dropout=convention, skips=skips)
    model = make([c])
    zero_sublayers(model)
    with torch.no_grad():  # random LayerNorm gains make the "stream" sources distinguishable
        for layer in model.sublayers:
            layer.ln.weight.uniform_(0.5, 1.5)
    model.eval()
    idx = torch.randint(V, (2, 6), generator=torch.Generator().manual_seed(0))
    got = final_stream(model, idx)

    h = [(model.wte[0][idx] + model.wpe[0][:6]).reshape(1, 12, 8)]
    sources = []
    L = c.n_sublayers
    for i in range(L):
        u = F.layer_norm(h[i], (8,)) * model.sublayers[i].ln.weight[0]
        sources.append(u if norm == "stream" else h[i])
        nxt = torch.zeros_like(h[i])
        for k, r in skips.items():
            if (i + 1) % k == 0:
                scale = (1 - r) if convention == "paper" else 1.0
                nxt = nxt + scale * sources[i + 1 - k]
        h.append(nxt)
    torch.testing.assert_close(got, h[L], rtol=1e-5, atol=1e-6)


def test_skip_paths_land_where_the_design_says():
    paths = skip_paths(cfg(skips={1: 0.0, 2: 0.5, 4: 0.9}))
    assert [(p.depth, p.source, p.target) for p in paths if p.depth == 2] == [(2, 0, 2), (2, 2, 4), (2, 4, 6), (2, 6, 8)]
    assert [(p.source, p.target) for p in paths if p.depth == 4] == [(0, 4), (4, 8)]
    assert len([p for p in paths if p.depth == 1]) == 8
    assert [(p.source, p.target) for p in skip_paths(cfg(skips={8: 0.1}))] == [(0, 8)]


def test_paper_skip_dropout_keeps_masks_unscaled_in_training_and_scales_in_eval():
    s = torch.rand(1, 4000, 8) + 1.0
    rates = Rates([0.3])
    trained = skip_path(s, rates, "paper", training=True)
    kept = trained != 0
    assert torch.equal(trained[kept], s[kept])  # unscaled
    assert 0.65 < kept.float().mean() < 0.75
    torch.testing.assert_close(skip_path(s, rates, "paper", training=False), 0.7 * s)
    assert torch.count_nonzero(skip_path(s, Rates([1.0]), "paper", training=True)) == 0  # rate 1 removes it
    assert torch.count_nonzero(skip_path(s, Rates([1.0]), "paper", training=False)) == 0


def test_inverted_skip_dropout_scales_in_training_and_is_identity_in_eval():
    s = torch.rand(1, 4000, 8) + 1.0
    rates = Rates([0.3])
    trained = skip_path(s, rates, "inverted", training=True)
    kept = trained != 0
    torch.testing.assert_close(trained[kept], s[kept] / 0.7)
    assert 0.65 < kept.float().mean() < 0.75
    assert torch.equal(skip_path(s, rates, "inverted", training=False), s)


def reference_mask(shape: tuple[int, ...], rates: Rates, factor: list[float]) -> torch.Tensor:
    """The masks' definition, drawn from the global generator: per element 16 random bits (four
    int16 lanes of one int64 draw, in order), kept iff <= the configuration's threshold."""
    n = 1
    for d in shape:
        n *= d
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:n].view(shape).to(torch.int32)
    out = torch.zeros(shape)
    for i, f in enumerate(factor):
        out[i] = (lanes[i] <= int(rates.threshold[i])).float() * f
    return out


@pytest.mark.parametrize("convention", ["paper", "inverted"])
def test_masks_for_a_seed_are_those_of_their_definition_and_skips_add_bit_for_bit(convention):
    """Speed work on the dropout path must not change which elements a seed drops: a run
    resumed or repeated with a newer version keeps its masks."""
    rates = Rates([0.025, 0.5, 1.0])
    h, s = torch.randn(3, 40, 8), torch.randn(3, 40, 8)
    torch.manual_seed(5)
    expected = reference_mask((3, 40, 8), rates, rates.inverse.tolist())
    torch.manual_seed(5)
    assert torch.equal(dropout(s, rates, training=True), s * expected)
    factor = rates.present if convention == "paper" else rates.inverse
    torch.manual_seed(6)
    mask = reference_mask((3, 40, 8), rates, factor.tolist())
    torch.manual_seed(6)
    got = add_skip(h.clone(), s, rates, convention, training=True)
    if convention == "paper":
        assert torch.equal(got, h + s * mask)  # the mask is 0 or 1: no rounding to differ
    else:
        torch.testing.assert_close(got, h + s * mask, rtol=1e-6, atol=1e-6)
    assert torch.equal(add_skip(h, s, rates, convention, training=False), h + skip_path(s, rates, convention, False))


def test_each_configuration_in_a_group_uses_its_own_skip_rate():
    s = torch.ones(3, 1000, 4)
    out = skip_path(s, Rates([0.0, 0.5, 0.9]), "paper", training=False)
    assert out[:, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.1])
    kept = (skip_path(s, Rates([0.0, 0.5, 0.9]), "paper", training=True) != 0).float().mean(dim=(1, 2))
    assert kept[0] == 1.0 and 0.45 < kept[1] < 0.55 and 0.05 < kept[2] < 0.15


def test_eval_mode_is_deterministic_and_training_mode_is_not():
    model = make([cfg(dropout=0.3, skips={1: 0.2, 2: 0.5})])
    idx = torch.randint(V, (3, 6))
    model.eval()
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


def test_a_configuration_starts_from_the_same_weights_in_any_group():
    alone = make([cfg(seed=7)])
    group = make([cfg(seed=3), cfg(seed=7, dropout=0.5), cfg(seed=9)])
    for (name, a), (_, g) in zip(alone.named_parameters(), group.named_parameters()):
        assert torch.equal(a[0], g[1]), name
    assert not torch.equal(group.wte[0], group.wte[1])


def test_in_eval_a_grouped_configuration_computes_what_it_computes_alone():
    """Differing attention rates force the explicit attention path; it must match fused SDPA."""
    configs = [cfg(seed=1, attn_dropout=0.1, skips={1: 0.1, 2: 0.3}),
               cfg(seed=2, attn_dropout=0.4, skips={1: 0.0, 2: 0.9})]
    group = make(configs).eval()
    idx = torch.randint(V, (2, 6))
    together = group(idx)
    for n, c in enumerate(configs):
        alone = make([c]).eval()
        torch.testing.assert_close(together[n], alone(idx)[0], rtol=1e-5, atol=1e-5)


def test_parameter_counts_match_the_design():
    for n_layer, expected in [(2, 410_368), (4, 804_096), (16, 3_166_464)]:
        c = RunConfig(n_layer=n_layer)
        assert count_params(c, 65) == expected
        assert Decoder([c, c], 65).n_params() == expected


def test_weight_decay_applies_to_matrices_and_embeddings_only():
    model = make([cfg(bias=True), cfg(bias=True, seed=2)])
    decay, no_decay = model.decay_groups(0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "wte" in decayed and "wpe" in decayed and "sublayers.0.f.c_attn.weight" in decayed
    assert all("ln" not in n and not n.endswith("bias") for n in decayed)
    assert no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"ln_f.weight", "sublayers.0.ln.bias", "sublayers.1.f.c_fc.bias"}


def test_loss_of_each_configuration_depends_only_on_its_own_weights():
    model = make([cfg(seed=1), cfg(seed=2)])
    idx = torch.randint(V, (2, 6))
    loss = config_losses(model(idx), idx)
    loss[0].backward()
    assert torch.count_nonzero(model.wte.grad[1]) == 0
    assert torch.count_nonzero(model.wte.grad[0]) > 0
