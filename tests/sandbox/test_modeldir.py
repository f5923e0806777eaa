"""Model directory checks beyond file names: pickles under any name, and the unsafe option."""

from __future__ import annotations

import logging
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from sandbox.modeldir import ModelLoadError, UnsafeWeightsError, check_model_dir, is_pickle_file


@pytest.fixture
def model_dir(demo_model_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "m"
    shutil.copytree(demo_model_dir, path)
    return path


def test_the_demo_model_passes(model_dir: Path) -> None:
    assert check_model_dir(model_dir) == model_dir.resolve()
    assert not any(is_pickle_file(p) for p in model_dir.iterdir())


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_pickle_under_any_name_is_refused(model_dir: Path, protocol: int) -> None:
    (model_dir / "extra_state.data").write_bytes(pickle.dumps({"w": [1.0]}, protocol=protocol))
    with pytest.raises(UnsafeWeightsError, match=r"extra_state\.data") as err:
        check_model_dir(model_dir)
    assert err.value.code == "unsafe_weights"


def test_a_torch_zip_checkpoint_under_any_name_is_refused(model_dir: Path) -> None:
    with zipfile.ZipFile(model_dir / "weights.zip", "w") as archive:  # torch.save's layout
        archive.writestr("weights/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("weights/data/0", b"\0" * 16)
    with pytest.raises(UnsafeWeightsError, match=r"weights\.zip"):
        check_model_dir(model_dir)


def test_other_zips_and_safetensors_headers_are_not_pickles(model_dir: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(model_dir / "docs.zip", "w") as archive:
        archive.writestr("README.md", "hello")
    fake = model_dir / "more.safetensors"
    fake.write_bytes(b"\x80\x02" + b"\0" * 30)  # a header length of 640 bytes looks like PROTO 2
    assert not is_pickle_file(model_dir / "docs.zip") and not is_pickle_file(fake)
    check_model_dir(model_dir)


def test_unsafe_allow_pickle_weights_lets_them_through_with_a_warning(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({}, protocol=2))
    with caplog.at_level(logging.WARNING, logger="llmos.sandbox.modeldir"):
        assert check_model_dir(model_dir, allow_pickle_weights=True) == model_dir.resolve()
    assert "UNSAFE" in caplog.text and "pytorch_model.bin" in caplog.text


def test_allowed_pickle_weights_alone_are_enough(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({}, protocol=2))
    check_model_dir(tmp_path, allow_pickle_weights=True)
    with pytest.raises(UnsafeWeightsError):
        check_model_dir(tmp_path)


def test_a_plain_load_error_has_its_own_code(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        check_model_dir(tmp_path / "missing")
    assert err.value.code == "model_load_failed" and not isinstance(err.value, UnsafeWeightsError)
