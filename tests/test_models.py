import pytest
import torch

from detector.models import count_parameters, create_model, list_models

SMALL = {"fakespot": {}, "cnn": {}, "resnet50": {},
         "ensemble": {"members": [{"arch": "cnn"}, {"arch": "fakespot", "kwargs": {"widths": [8, 16], "blocks": [1, 1]}}]}}


def test_cnn_is_the_published_baseline():
    assert count_parameters(create_model("cnn")) == 355_649


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: cnn, ensemble, fakespot, resnet50"):
        create_model("vgg")


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_shapes_no_nans_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL[name]).train()
    x = torch.randn(4, 3, 32, 32)
    y = model(x)
    assert y.shape == (4,)
    assert torch.isfinite(y).all()
    torch.nn.functional.binary_cross_entropy_with_logits(y, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_cam_layers_are_spatial_at_32x32(name):
    model = create_model(name, **SMALL[name]).eval()
    layers = model.cam_layers()
    assert layers and all(isinstance(m, torch.nn.Module) for m in layers)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(o.shape)) for m in layers]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
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
