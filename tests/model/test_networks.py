"""Networks built from plans equal nnU-Net's own, in the current and the old plans format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model_factory
from mrseg.model import load_model
from mrseg.model.networks import build_network
from mrseg.model.plans import parse_plans

# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_network_equals_nnunets(kind, trained_weights):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = parse_plans(model_factory.make_plans(kind=kind)).configuration("3d_fullres").architecture
    ours = build_network(arch, num_input_channels=1, num_output_channels=model_factory.NUM_LABELS)
    theirs = get_network_from_plans(arch.class_name, arch.kwargs, list(arch.requires_import), 1,
                                    model_factory.NUM_LABELS, allow_init=True, deep_supervision=False)
    assert type(ours) is type(theirs)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    assert {k: v.shape for k, v in ours_state.items()} == {k: v.shape for k, v in theirs_state.items()}

    ours.load_state_dict(trained_weights[kind])
    theirs.load_state_dict(trained_weights[kind])
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 1, 16, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        out = ours.eval()(x)
        assert out.shape == (1, model_factory.NUM_LABELS, 16, 32, 32)
        assert torch.allclose(out, theirs.eval()(x), atol=1e-5)


def test_old_format_plans_build_the_same_network(tmp_path, weights, write_model):
    """The weights of a new-format model fit the network an old-format plans.json describes."""
    folder = write_model(tmp_path / "m", weights, num_folds=1, plans=model_factory.make_plans(old_format=True))
    plans = json.loads((folder / "plans.json").read_text())
    assert "architecture" not in plans["configurations"]["3d_fullres"]
    (network,) = load_model(folder).build_networks()
    assert type(network).__name__ == "PlainConvUNet"
