"""Image folders and zips: recursive search, centre crop + resize once, cache, corrupt files."""

import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from creps.train.data import DatasetError, centre_crop_resize, load_images, prepare_dataset

from train_helpers import write_images


def reference_crop(path, res):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return np.asarray(img.crop(box).resize((res, res), Image.LANCZOS)).transpose(2, 0, 1)


def test_folder_is_searched_recursively_and_cropped(tmp_path):
    paths = write_images(tmp_path / "data", 7)
    cached = prepare_dataset(tmp_path / "data", 8, tmp_path / "cache")
    images = load_images(cached)
    assert images.shape == (7, 3, 8, 8) and images.dtype == np.uint8
    ordered = sorted(paths, key=lambda p: str(p.relative_to(tmp_path / "data")))
    for got, path in zip(images, ordered):
        assert np.array_equal(got, reference_crop(path, 8))


def test_centre_crop_of_a_wide_image_keeps_the_middle():
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 200  # only the centre square is bright
    out = centre_crop_resize(Image.fromarray(pixels), 5)
    assert out.shape == (3, 5, 5) and out.min() >= 190


def test_zip_gives_the_same_images_as_the_folder(tmp_path):
    paths = write_images(tmp_path / "data", 5, seed=2)
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        for p in paths:
            zf.write(p, p.relative_to(tmp_path / "data"))
    a = load_images(prepare_dataset(tmp_path / "data", 16, tmp_path / "cache"))
    b = load_images(prepare_dataset(tmp_path / "data.zip", 16, tmp_path / "cache"))
    assert np.array_equal(a, b)


def test_cache_is_reused_and_keyed_by_resolution_and_content(tmp_path, monkeypatch):
    write_images(tmp_path / "data", 3)
    first = prepare_dataset(tmp_path / "data", 8, tmp_path / "cache")
    monkeypatch.setattr("creps.train.data._read_all", lambda *a: pytest.fail("re-read a cached dataset"))
    assert prepare_dataset(tmp_path / "data", 8, tmp_path / "cache") == first
    monkeypatch.undo()
    assert prepare_dataset(tmp_path / "data", 16, tmp_path / "cache") != first
    write_images(tmp_path / "data", 4, seed=9)  # adds and rewrites files
    assert prepare_dataset(tmp_path / "data", 8, tmp_path / "cache") != first


def test_corrupt_images_are_skipped_and_counted(tmp_path, caplog):
    write_images(tmp_path / "data", 3)
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "data" / "notes.txt").write_text("ignored: not an image name")
    with caplog.at_level(logging.WARNING):
        images = load_images(prepare_dataset(tmp_path / "data", 8, tmp_path / "cache"))
    assert len(images) == 3
    assert "skipped 1 unreadable image(s) of 4" in caplog.text


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.mkdir(), "no images found"),
    (lambda p: None, "no such data folder"),
    (lambda p: p.write_text("x"), "not a folder of images or a zip"),
])
def test_bad_data_paths(tmp_path, setup, message):
    target = tmp_path / "data"
    setup(target)
    with pytest.raises(DatasetError, match=message):
        prepare_dataset(target, 8, tmp_path / "cache")


def test_all_images_unreadable(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="none of the 1 image files could be read"):
        prepare_dataset(tmp_path / "data", 8, tmp_path / "cache")
