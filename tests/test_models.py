import pytest
import torch

from detector.models import count_parameters, create_model, list_models

SMALL = {"fakespot": {}, "cnn": {}, "resnet50": {},
         "ensemble": {"members": [{"arch": "cnn"}, {"arch": "fakespot", "kwargs": {"widths": [8, 16], "blocks": [1, 1]}}]},
         "wild": {"head": {"kind": "mlp", "layers": [6, 12]}}, "residual": {"width": 4}}
SIZE = {"wild": 224, "residual": 64}  # CLIP ViT-B/16's input, the residual network's crop; CIFAKE models take 32x32
DETECTORS = [n for n in list_models() if n != "clip_vit_b16"]  # clip_vit_b16 is a backbone (embeddings)


def test_cnn_is_the_published_baseline():
    assert count_parameters(create_model("cnn")) == 355_649


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: clip_vit_b16, cnn, ensemble, fakespot, residual, resnet50, wild"):
        create_model("vgg")


@pytest.mark.parametrize("name", DETECTORS)
def test_forward_backward_shapes_no_nans_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).train()
    x = torch.randn(4, 3, SIZE.get(name, 32), SIZE.get(name, 32))
    y = model(x)
    assert y.shape == (4,)
    assert torch.isfinite(y).all()
    torch.nn.functional.binary_cross_entropy_with_logits(y, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", DETECTORS)
def test_cam_layers_are_spatial_at_the_input_size(name):
    model = create_model(name, **SMALL[name]).eval()
    layers = model.cam_layers()
    assert layers and all(isinstance(m, torch.nn.Module) for m in layers)
    shapes = []
    reshape = getattr(model, "reshape_transform", None) or (lambda t: t)  # ViT tokens -> maps, as the Explainer does
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(reshape(o).shape)) for m in layers]
    with torch.no_grad():
        model(torch.randn(1, 3, SIZE.get(name, 32), SIZE.get(name, 32)))
    for h in hooks:
        h.remove()
    assert shapes and all(s[-1] >= 2 and s[-2] >= 2 for s in shapes), shapes


def test_ensemble_is_the_mean_of_its_members_logits():
    torch.manual_seed(0)
    ens = create_model("ensemble", **SMALL["ensemble"]).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (ens.members[0](x) + ens.members[1](x)) / 2
        assert torch.allclose(ens(x), expected)
    with pytest.raises(ValueError, match="at least one member"):
        create_model("ensemble", members=[])


def test_clip_backbone_gives_512_d_embeddings_and_14x14_token_maps():
    torch.manual_seed(0)
    vit = create_model("clip_vit_b16").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        e, cls = vit.forward_tokens(x, (3, 12))
        assert torch.allclose(e, vit(x), atol=1e-5)  # forward_tokens is the same network as forward
    assert e.shape == (2, 512) and [c.shape for c in cls] == [(2, 768), (2, 768)]
    tokens = torch.randn(2, 197, 768)
    assert vit.reshape_transform(tokens).shape == (2, 768, 14, 14)


def test_wild_head_rejects_unknown_kinds_and_sizes_its_input_from_the_layers():
    from detector.models import WildHead

    with pytest.raises(ValueError, match="valid: linear, mlp"):
        WildHead(kind="svm")
    head = WildHead(kind="linear", layers=(4, 8))
    feats = head.features(torch.randn(3, 512), [torch.randn(3, 768), torch.randn(3, 768)])
    assert feats.shape == (3, 512 + 2 * 768) and head(feats).shape == (3,)
    assert torch.allclose(feats[:, :512].norm(dim=1), torch.ones(3), atol=1e-5)  # the embedding is L2-normalised
