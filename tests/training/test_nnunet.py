"""Plans handling of mrseg.training.nnunet without nnU-Net processes: transfer learning's plans."""

from __future__ import annotations

import pytest

from model_factory import make_plans
from mrseg.training.nnunet import CONFIGURATION, transfer_plans


def configuration(plans: dict) -> dict:
    return plans["configurations"][CONFIGURATION]


def test_transfer_copies_the_source_network_patch_and_spacing():
    source = make_plans(kind="ResidualEncoderUNet", patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0))
    target = make_plans(kind="PlainConvUNet", patch_size=(16, 32, 32), spacing=(3.0, 1.5, 1.5))
    plans = transfer_plans(source, target)
    for key in ("architecture", "patch_size", "spacing", "batch_size"):
        assert configuration(plans)[key] == configuration(source)[key]
    assert configuration(target)["spacing"] == [3.0, 1.5, 1.5]  # the target's own plans are left as they were


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1)])
def test_a_spacing_asked_for_is_kept_with_the_source_network(transpose):
    """Spacing is given in the images' axis order and stored in the plans after nnU-Net's transpose."""
    source = make_plans(patch_size=(32, 48, 48), spacing=(6.0, 6.0, 6.0), transpose=transpose)
    target = make_plans(patch_size=(16, 32, 32), spacing=(3.0, 1.5, 1.5))
    plans = transfer_plans(source, target, spacing=(5.0, 4.0, 3.0))
    assert configuration(plans)["spacing"] == [[5.0, 4.0, 3.0][axis] for axis in transpose]
    assert configuration(plans)["architecture"] == configuration(source)["architecture"]
    assert configuration(plans)["patch_size"] == [32, 48, 48]  # in voxels: it now covers less of the body
    assert plans["transpose_forward"] == list(transpose)
