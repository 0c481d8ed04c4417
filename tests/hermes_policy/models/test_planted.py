"""Planted memory models: the generator, the names, the real classes, and roles that show through a study."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.metrics import anchor_structure, recency_index
from hermes_policy.errors import ModelError
from hermes_policy.models.planted import (
    FAMILIES,
    ROLE_TIER,
    TOKENS_PER_FRAME,
    PlantedConfig,
    PlantedHead,
    build_planted,
    draw_planted,
    parse_planted_name,
    scaled,
)
from hermes_policy.models.registry import load_model
from hermes_policy.video import open_video
from probes.capture import StudyConfig, capture


def test_draws_are_reproducible_and_vary_with_the_seed():
    assert draw_planted(3, "qwen2-vl") == draw_planted(3, "qwen2-vl")
    assert draw_planted(3, "qwen2-vl") != draw_planted(4, "qwen2-vl")
    assert draw_planted(3, "qwen2-vl").layers != draw_planted(3, "embedded").layers or \
        draw_planted(3, "qwen2-vl").heads != draw_planted(3, "embedded").heads


def test_the_generator_covers_the_hard_cases():
    draws = [draw_planted(s, "embedded") for s in range(60)]
    assert any(d.layers[0] == "diffuse" for d in draws)  # a diffuse first layer
    order = {"sensory": 0, "working": 1, "long-term": 2}
    assert any([order[k] for k in d.layers if k in order] != sorted(order[k] for k in d.layers if k in order)
               for d in draws)  # a stack out of depth order
    assert len({d.num_layers for d in draws}) > 4 and len({d.num_heads for d in draws}) > 1
    assert any(d.num_kv_heads < d.num_heads for d in draws)  # grouped-query attention
    boundaries = {d.layers.index("working") / d.num_layers for d in draws if "working" in d.layers}
    assert min(boundaries) < 0.1 and max(boundaries) > 0.5  # tier boundaries anywhere, not only at 10% / 70%
    for d in draws:
        for kind, heads in zip(d.layers, d.heads):
            roles = [h.role for h in heads]
            if kind != "diffuse":  # the layer's own role is a strict majority of its heads
                main = {"sensory": "recency", "working": "mixed", "long-term": "anchor"}[kind]
                assert roles.count(main) > len(roles) / 2


def test_ground_truth_lists_what_was_planted():
    cfg = draw_planted(5, "llava-ov")
    truth = cfg.ground_truth()
    assert truth["layers"] == list(cfg.layers) and len(truth["roles"]) == cfg.num_layers
    for row, heads in zip(truth["anchor_position"], cfg.heads):
        for pos, head in zip(row, heads):
            assert (pos is None) == (head.anchor_slot < 0)
            assert pos is None or 0 <= pos < TOKENS_PER_FRAME
    assert scaled(cfg, 0.5).ground_truth()["strength"] == 0.5
    for c in (cfg, scaled(cfg, 0.3), draw_planted(5, "llava-ov", strength=0.1, noise=2.5)):
        assert parse_planted_name(c.name) == c  # a model's name rebuilds it, truth and all


@pytest.mark.parametrize("name, message", [
    ("planted:x", "seed must be an integer"),
    ("planted:1,family=gpt", "unknown planted family"),
    ("planted:1,colour=red", "unexpected"),
    ("planted:1,strength=-1", "finite and >= 0"),
    ("planted:1,strength=abc", "numbers"),
    ("planted:99999999999999999999", "seed must be between 0 and"),
    ("planted:-1", "seed must be between 0 and"),
    ("planted:3,strength=1e30", "between 0 and 100"),
])
def test_bad_planted_names_are_one_line_model_errors(name, message):
    with pytest.raises(ModelError, match=message):
        load_model(name)


def test_invalid_configs_are_refused():
    head = PlantedHead("recency", decay=0.1)
    with pytest.raises(ValueError, match="anchor slot"):
        PlantedHead("anchor", anchor_gap=3.0)
    with pytest.raises(ValueError, match="at least 3 layers"):
        PlantedConfig("embedded", 0, ("sensory",), ((head,),), 1, (0,))
    with pytest.raises(ValueError, match="anchor positions"):
        PlantedConfig("embedded", 0, ("sensory",) * 3, ((head,),) * 3, 1, (16,))


@pytest.mark.parametrize("family, cls", [
    ("embedded", "LlamaForCausalLM"), ("qwen2-vl", "Qwen2VLForConditionalGeneration"),
    ("qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration"), ("llava-ov", "LlavaOnevisionForConditionalGeneration"),
    ("qwen3-vl", "Qwen3VLForConditionalGeneration"), ("qwen3.5", "Qwen3_5ForConditionalGeneration"),
    ("internvl", "InternVLForConditionalGeneration"), ("smolvlm", "SmolVLMForConditionalGeneration"),
])
def test_each_family_is_its_real_transformers_class(family, cls):
    adapter = load_model(f"planted:2,family={family}")
    assert type(adapter.model).__name__ == cls
    assert adapter.planted == parse_planted_name(f"planted:2,family={family}")
    assert adapter.weights == "planted" and adapter.num_layers == adapter.planted.num_layers
    assert adapter.family == family
    frames = list(open_video("synthetic:seed=2,frames=4").frames())[: adapter.frames_per_group]
    chunk = adapter.encode_frames(frames, 0)
    assert int((chunk.meta.patch >= 0).sum()) == TOKENS_PER_FRAME  # a 4 x 4 grid of patch tokens per frame (group)
    with_text = family in ("qwen3-vl", "qwen3.5", "internvl", "smolvlm")  # frame text on top of the patches
    assert (adapter.tokens_per_frame(128, 128) > TOKENS_PER_FRAME) == with_text


def test_every_planted_row_of_the_family_table_has_a_planted_family():
    from hermes_policy.models.families import FAMILIES as TABLE

    assert FAMILIES[:4] == ("embedded", "qwen2-vl", "qwen2.5-vl", "llava-ov")  # the first families keep their order
    assert {f.name for f in TABLE if f.planted} <= set(FAMILIES)


def test_qwen3_5_plants_its_attention_layers_and_leaves_the_deltanet_layers_transparent():
    adapter = build_planted(draw_planted(2, "qwen3.5"))
    L = adapter.planted.num_layers
    assert adapter.num_model_layers == 2 * L and adapter.kv_layers == tuple(range(1, 2 * L, 2))
    for i, layer in enumerate(adapter.text_model.layers):
        assert (adapter.layer_types[i] == "linear_attention") == hasattr(layer, "linear_attn")
        if hasattr(layer, "linear_attn"):
            assert not layer.linear_attn.out_proj.weight.any() and not layer.mlp.down_proj.weight.any()
    assert adapter.text_model.rotary_emb.inv_freq.numel() == 16  # partial_rotary_factor 1.0: every pair rotates


def test_qwen3_vl_runs_the_real_deepstack_path_with_zero_features():
    adapter = build_planted(draw_planted(2, "qwen3-vl"))
    frames = list(open_video("synthetic:seed=2,frames=2").frames())
    chunk = adapter.encode_frames(frames, 0)
    assert chunk.deepstack is not None and chunk.deepstack.shape[0] == 3 and not chunk.deepstack.any()
    assert len(adapter.forward_kwargs(chunk)["deepstack_visual_embeds"]) == 3


def test_q_k_norms_return_the_planted_head_vectors():
    """Through per-head RMSNorm every query and key vector has RMS 1 before the norm's gain, whatever the token."""
    for family in ("qwen3-vl", "qwen3.5", "internvl"):
        adapter = build_planted(draw_planted(3, family))
        seen: list[torch.Tensor] = []

        def record(module, inputs, output, seen=seen):  # mean(u²) of every head vector the norm sees
            seen.append(inputs[0].double().pow(2).mean(-1))

        hooks = [norm.register_forward_hook(record) for layer in adapter.text_model.layers
                 if hasattr(layer, "self_attn") for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm)]
        _study(adapter, 8)
        for hook in hooks:
            hook.remove()
        ms = torch.cat([m.flatten() for m in seen])
        assert float((ms - 1).abs().max()) < 1e-3, family


def _study(adapter, frames=24):
    return capture(adapter, open_video(f"synthetic:seed=2,frames={frames}"), StudyConfig(), progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_roles_show_through_an_unchanged_study(family):
    """Anchor heads peak at their planted position; recency rates rank as planted; diffuse heads show neither."""
    adapter = load_model(f"planted:7,family={family}")
    cfg = adapter.planted
    rec = _study(adapter)
    rate, anchors = recency_index(rec)["decay"], anchor_structure(rec)["concentration"]
    planted, measured = [], []
    for i, heads in enumerate(cfg.heads):
        position_mass = rec["position_mass", i].double().nanmean(dim=(0, 1))  # (H, P)
        for h, head in enumerate(heads):
            if head.role == "anchor":
                assert int(position_mass[h].argmax()) == cfg.anchor_positions[head.anchor_slot]
                assert anchors[i, h] > 0.2 and abs(float(rate[i, h])) < 1.0
            if head.role == "diffuse":
                assert anchors[i, h] < 0.2 and abs(float(rate[i, h])) < 1.0
            if head.decay > 0:
                planted.append(head.decay)
                measured.append(float(rate[i, h]))
    from analysis.metrics import spearman

    assert spearman(torch.tensor(planted), torch.tensor(measured)) > 0.9


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl", "qwen3.5", "internvl", "smolvlm"])
def test_the_study_never_reads_the_ground_truth(family):
    """A model without its truth attached records exactly the same attention."""
    with_truth = build_planted(draw_planted(1, family))
    without = build_planted(draw_planted(1, family))
    del without.planted
    a, b = _study(with_truth, 12), _study(without, 12)
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], equal_nan=True)


def test_strength_zero_leaves_only_noise():
    rec = _study(build_planted(draw_planted(4, "embedded", strength=0.0)), 16)
    assert float(anchor_structure(rec)["concentration"].nanmean()) < 0.2
    assert math.isfinite(float(recency_index(rec)["decay"].nanmean()))
    assert set(ROLE_TIER) == {"recency", "mixed", "anchor"}


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_rates_and_gaps_are_what_the_truth_says(family):
    """The model's own attention (last step, the local pseudo-query) decays by the planted rate per frame of age,
    and puts the planted logit gap on the anchor position: the ground truth is true of the weights."""
    cfg = draw_planted(7, family)
    rec = _study(build_planted(cfg), 32)
    checked = {"recency": 0, "anchor": 0}
    for i, heads in enumerate(cfg.heads):
        frame_mass = rec["frame_mass", i][-1, 0].double()  # (H, F)
        # (H, P): P counts a frame's text tokens too where the family has them; patches come first
        position_mass = rec["position_mass", i][-1, 0].double()[:, :TOKENS_PER_FRAME]
        for h, head in enumerate(heads):
            if head.role == "recency":
                m = frame_mass[h]
                f = torch.nonzero(~torch.isnan(m)).flatten().double()  # frame index (Qwen: each pair's first)
                y = torch.log(m[~torch.isnan(m)])
                slope = float(((f - f.mean()) * (y - y.mean())).sum() / ((f - f.mean()) ** 2).sum())
                assert slope == pytest.approx(head.decay, rel=0.15, abs=0.01)
                checked["recency"] += 1
            if head.role == "anchor":
                p = position_mass[h]
                at = cfg.anchor_positions[head.anchor_slot]
                others = torch.cat([p[:at], p[at + 1:]])
                gap = float(torch.log(p[at] / others.mean()))
                assert gap == pytest.approx(head.anchor_gap, rel=0.15)
                checked["anchor"] += 1
    assert checked["recency"] and checked["anchor"]
