"""deploy_res.data: image folders, labelled folders, array files, sample photos, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deploy_res.data.images import load_image_folder, load_labelled_folder
from deploy_res.data.inputs import load_array_file, load_inputs
from deploy_res.data.photos import random_crops, sample_inputs, sample_photo, sample_photo_names, write_random_crops, write_sample_photos
from deploy_res.data.preprocess import preprocess_array
from deploy_res.core.errors import DeployResError
from deploy_res.models.registry import Preprocessing

PRE = Preprocessing(input_size=(3, 32, 32), crop_pct=0.875)  # resize 36, crop 32


def _write(path, size=(48, 40), value=None, mode="RGB"):
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    array = rng.integers(0, 256, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=None).save(path)
    return array


def test_preprocessing_matches_a_hand_computed_pipeline():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = preprocess_array(image, PRE)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    # resize short side 40 -> 36 (bilinear), centre-crop 32, /255, normalise
    resized = np.asarray(Image.fromarray(image).resize((54, 36), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    crop = resized[2:34, 11:43]
    expected = ((crop - np.array(PRE.mean, np.float32)) / np.array(PRE.std, np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_constant_grey_image_normalises_to_known_values():
    image = np.full((50, 50), 128, np.uint8)  # grey -> RGB replicated
    out = preprocess_array(image, PRE)
    expected = (128 / 255 - np.array(PRE.mean)) / np.array(PRE.std)
    np.testing.assert_allclose(out[:, 5, 5], expected, rtol=1e-5)


def test_image_folder_is_sorted_recursive_and_counted(tmp_path):
    for name in ("b.png", "a.jpg", "sub/c.png"):
        _write(tmp_path / name)
    samples = load_image_folder(tmp_path, PRE)
    assert samples.names == ["a.jpg", "b.png", "sub/c.png"]
    assert samples.arrays.shape == (3, 3, 32, 32) and samples.labels is None
    assert load_image_folder(tmp_path, PRE, count=2).names == ["a.jpg", "b.png"]


def test_missing_empty_and_short_folders_fail_in_one_line(tmp_path):
    with pytest.raises(DeployResError, match="does not exist"):
        load_image_folder(tmp_path / "nope", PRE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployResError, match="is empty"):
        load_image_folder(tmp_path / "empty", PRE)
    _write(tmp_path / "two" / "a.png")
    _write(tmp_path / "two" / "b.png")
    with pytest.raises(DeployResError, match="2 usable samples.*fewer than the 5 asked") as info:
        load_image_folder(tmp_path / "two", PRE, count=5)
    assert "\n" not in str(info.value)


def test_undecodable_files_are_named_and_skipped_only_when_asked(tmp_path):
    _write(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    _write(tmp_path / "full.jpg", size=(64, 64))
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(DeployResError) as info:
        load_image_folder(tmp_path, PRE)
    message = str(info.value)
    assert "notes.txt" in message and "truncated.jpg" in message and "good.png" not in message
    samples = load_image_folder(tmp_path, PRE, skip_bad=True)
    assert samples.names == ["full.jpg", "good.png"]
    assert sorted(samples.skipped) == ["notes.txt", "truncated.jpg"]


def test_labelled_folder_gives_sorted_class_indices_round_robin(tmp_path):
    for cls, n in (("cat", 3), ("ant", 2)):
        for i in range(n):
            _write(tmp_path / cls / f"{i}.png")
    samples = load_labelled_folder(tmp_path, PRE)
    assert samples.class_names == ["ant", "cat"]
    assert sorted(samples.labels.tolist()) == [0, 0, 1, 1, 1]
    assert load_labelled_folder(tmp_path, PRE, count=2).labels.tolist() == [0, 1]
    assert load_inputs(tmp_path, PRE, labelled=True).labels is not None


def test_npy_and_npz_are_checked_against_the_model_input(tmp_path):
    data = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", data)
    loaded = load_array_file(tmp_path / "x.npy", (3, 8, 8))
    np.testing.assert_array_equal(loaded.arrays, data)
    assert load_array_file(tmp_path / "x.npy", (None, 8, 8), count=2).arrays.shape[0] == 2
    with pytest.raises(DeployResError, match=r"shape \(4, 3, 8, 8\).*expects \(N, 3, 16, 16\)"):
        load_array_file(tmp_path / "x.npy", (3, 16, 16))
    np.save(tmp_path / "f64.npy", data.astype(np.float64))
    with pytest.raises(DeployResError, match="float64.*expects float32"):
        load_array_file(tmp_path / "f64.npy", (3, 8, 8))
    with pytest.raises(DeployResError, match="4 usable samples.*fewer than the 10"):
        load_array_file(tmp_path / "x.npy", (3, 8, 8), count=10)
    np.savez(tmp_path / "d.npz", inputs=data, labels=np.arange(4))
    both = load_inputs(tmp_path / "d.npz", input_shape=(3, 8, 8))
    assert both.labels.tolist() == [0, 1, 2, 3]
    np.savez(tmp_path / "bad_labels.npz", inputs=data, labels=np.arange(3))
    with pytest.raises(DeployResError, match="labels"):
        load_array_file(tmp_path / "bad_labels.npz", (3, 8, 8))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DeployResError, match="cannot read"):
        load_array_file(tmp_path / "junk.npy")


def test_folder_needs_preprocessing(tmp_path):
    _write(tmp_path / "a.png")
    with pytest.raises(DeployResError, match="preprocessing"):
        load_inputs(tmp_path)


def test_sample_photos_ship_with_scikit_image_and_crops_are_seeded(tmp_path):
    names = sample_photo_names()
    assert len(names) >= 12 and "astronaut.png" in names
    assert sample_photo("camera.png").shape[2] == 3  # grey -> RGB
    written = write_sample_photos(tmp_path / "photos")
    assert len(written) == len(names) and all(p.stat().st_size > 0 for p in written)
    a, b = random_crops(6, seed=3, size=64), random_crops(6, seed=3, size=64)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 6
    assert not np.array_equal(a[0], random_crops(1, seed=4, size=64)[0])
    paths = write_random_crops(tmp_path / "crops", 5, seed=1, size=48)
    assert [p.name for p in paths][:2] == ["crop_00000.jpg", "crop_00001.jpg"]
    assert load_image_folder(tmp_path / "crops", PRE).arrays.shape == (5, 3, 32, 32)
    inputs = sample_inputs(3, PRE, seed=0)
    assert inputs.shape == (3, 3, 32, 32) and inputs.dtype == np.float32


@pytest.mark.parametrize("channels", [3, 1])
def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path, channels):
    rng = np.random.default_rng(0)
    sixteen = rng.integers(0, 65536, (40, 48), dtype=np.uint16)
    (tmp_path / "deep").mkdir()
    (tmp_path / "eight").mkdir()
    Image.fromarray(sixteen).save(tmp_path / "deep" / "grey16.png")
    assert Image.open(tmp_path / "deep" / "grey16.png").mode.startswith("I")  # Pillow reads it as 16-bit
    Image.fromarray(((sixteen.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)).save(tmp_path / "eight" / "grey8.png")
    pre = Preprocessing(input_size=(channels, 32, 32), crop_pct=0.875, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    deep = load_inputs(tmp_path / "deep", pre).arrays
    eight = load_inputs(tmp_path / "eight", pre).arrays
    np.testing.assert_array_equal(deep, eight)  # the same picture at 8 bits, not 99.6 % white
    assert (deep == deep.max()).mean() < 0.05
