"""Checkpoints: safe loading (weights only, the numpy scalars allowed), and every way a file can be bad."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import model_factory
from mrseg.errors import ModelError
from mrseg.model import load_model
from mrseg.model.checkpoint import load_checkpoint

# --------------------------------------------------------------------------- loading


class _Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_corrupt_checkpoint(tmp_path, weights, rng, write_model):
    folder = write_model(tmp_path / "m", weights)
    (folder / "fold_1" / "checkpoint_final.pth").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match=r"fold_1/checkpoint_final\.pth: cannot load checkpoint"):
        load_model(folder)


def test_truncated_checkpoint(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    path = folder / "fold_0" / "checkpoint_final.pth"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        load_model(folder)


def test_empty_checkpoint_says_so(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(ModelError, match=r"fold_0/checkpoint_final\.pth: cannot load checkpoint \(the file is "
                                         r"empty, 0 bytes\); re-download or re-export the model"):
        load_model(folder)


def test_an_error_without_a_message_is_named_by_its_type(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    path.write_bytes(b"\x80\x02")  # a pickle header, then nothing: torch raises a bare EOFError
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: cannot load checkpoint \(EOFError\)"):
        load_checkpoint(path)


def test_file_that_is_not_an_nnunet_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ModelError, match="not an nnU-Net v2 checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(ModelError, match="is missing"):
        load_checkpoint(tmp_path / "checkpoint_final.pth")


def test_numpy_scalars_load_with_weights_only(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({
        "network_weights": {"w": torch.ones(2)},
        "logging": {"dice": [np.float64(0.5), np.float32(0.25)], "epoch": np.int64(3), "n": np.int32(2),
                    "ok": np.bool_(True)},
        "_best_ema": np.float64(0.55),
        "init_args": {"configuration": "3d_fullres"},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }, path)
    checkpoint = load_checkpoint(path)
    assert torch.equal(checkpoint.read_weights()["w"], torch.ones(2))
    assert checkpoint.mirror_axes == (0, 1, 2)
    assert checkpoint.trainer_name == "nnUNetTrainer"  # the default when absent


def test_written_checkpoints_carry_numpy_scalars(tmp_path, weights, write_model):
    """The factory's checkpoints hold numpy scalars, so a plain weights_only load would fail on them."""
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    path = folder / "fold_0" / "checkpoint_final.pth"
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, map_location="cpu", weights_only=True)
    assert load_checkpoint(path).configuration == "3d_fullres"


def test_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "evil": os.getcwd}, path)
    assert torch.load(path, weights_only=False)["evil"] is os.getcwd  # the file itself is a valid pickle
    with pytest.raises(ModelError, match=r"checkpoint_final\.pth: cannot load checkpoint .*unsafe to unpickle"):
        load_checkpoint(path)


def test_refusal_names_the_offending_global(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "evil": os.getcwd}, path)
    with pytest.raises(ModelError) as info:
        load_checkpoint(path)
    assert "getcwd" in str(info.value)
    assert "weights_only` set to `False`" not in str(info.value)


def test_code_in_a_checkpoint_is_never_run(tmp_path, weights, write_model):
    folder = write_model(tmp_path / "m", weights, num_folds=1)
    marker = tmp_path / "pwned"
    torch.save({"network_weights": weights, "init_args": {"configuration": "3d_fullres"},
                "payload": _Payload(str(marker))}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        load_model(folder)
    assert not marker.exists()
    torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)  # the unsafe load runs it
    assert marker.is_dir()


def test_legacy_checkpoint_format_loads_without_memory_mapping(tmp_path, weights):
    folder = model_factory.write_model_folder(tmp_path / "m", model_factory.make_plans(),
                                              model_factory.make_dataset(), [weights])
    path = folder / "fold_0" / "checkpoint_final.pth"
    raw = torch.load(path, weights_only=False)
    torch.save(raw, path, _use_new_zipfile_serialization=False)
    network = load_model(folder).build_networks("cpu")[0]
    assert all(torch.equal(network.state_dict()[k], weights[k]) for k in weights)
