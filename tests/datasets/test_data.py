"""Data sources on tiny generated data, their errors, and the resumable batch stream."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers import assert_clean_error
from PIL import Image

from sagan_cli.api import TensorImageSet
from sagan_cli.components import build_data_source
from sagan_cli.datasets.shapes import structural_score
from sagan_cli.errors import DataError
from sagan_cli.recipe import resolve_recipe
from sagan_cli.train.data import BatchStream, batch_indices


def source_for(data: dict, resolution: int = 32):
    recipe = resolve_recipe(
        {"name": "t", "data": {"resolution": resolution, **data}}, origin="test"
    )
    return build_data_source(recipe)


# ---- shapes ---------------------------------------------------------------------------------------


def test_shapes_is_deterministic_and_prefix_stable():
    small = source_for({"source": "shapes", "num_images": 70}).split("train")
    large = source_for({"source": "shapes", "num_images": 200}).split("train")
    again = source_for({"source": "shapes", "num_images": 70}).split("train")
    assert torch.equal(small.images, again.images)
    assert torch.equal(small.images, large.images[:70])  # image i does not depend on N
    other_seed = source_for({"source": "shapes", "num_images": 70, "seed": 1}).split("train")
    assert not torch.equal(small.images, other_seed.images)
    test = source_for({"source": "shapes", "test_images": 70}).split("test")
    assert not torch.equal(small.images, test.images)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_real_images_score_zero_and_are_mirror_symmetric(resolution):
    split = source_for({"source": "shapes", "num_images": 96}, resolution).split("train")
    images = split.images
    assert images.shape == (96, 3, resolution, resolution) and images.dtype == torch.uint8
    assert torch.equal(images, images.flip(-1))
    assert structural_score(images) == {
        "structure": 0.0,
        "asymmetry": 0.0,
        "blankness": 0.0,
        "invalidity": 0.0,
    }
    assert set(split.labels.tolist()) <= {0, 1, 2, 3}


def test_shapes_score_penalises_asymmetry_and_blank_images():
    real = source_for({"source": "shapes", "num_images": 64}).split("train").images
    left_only = real.clone()
    left_only[..., 16:] = real[..., :1, :1]  # wipe the mirrored half to background
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8)
    blank = torch.full_like(real, 40)
    assert structural_score(left_only)["asymmetry"] > 0.01
    assert structural_score(noise)["structure"] > 0.3
    assert structural_score(blank)["blankness"] == pytest.approx(1.0)
    assert structural_score(blank)["asymmetry"] == 0.0


# ---- image folder ---------------------------------------------------------------------------------


def write_image(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_recursive_resize_crop_and_labels(tmp_path):
    stripes = np.zeros((40, 80, 3), dtype=np.uint8)
    stripes[:, 20:60] = 255  # a wide image: the centre crop keeps only the white middle
    write_image(tmp_path / "cats" / "a.png", stripes)
    write_image(tmp_path / "cats" / "deep" / "b.jpg", np.full((64, 64, 3), 128, dtype=np.uint8))
    write_image(tmp_path / "dogs" / "c.png", np.full((32, 32, 3), 10, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = source_for({"source": "image-folder", "path": str(tmp_path), "labels": True})
    source.check()
    split = source.split("train")
    assert len(split) == 3 and source.num_classes == 2
    image, label = split[0]
    assert image.shape == (3, 32, 32) and label == 0
    assert image.float().mean() > 250  # resized to 32x64, centre 32 columns are white
    assert [split[i][1] for i in range(3)] == [0, 0, 1]
    unlabelled = source_for({"source": "image-folder", "path": str(tmp_path)})
    assert unlabelled.num_classes == 0 and unlabelled.split("train")[0][1] == -1


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="holds no .png"):
        source_for({"source": "image-folder", "path": str(tmp_path)}).check()
    with pytest.raises(DataError, match="is not a folder"):
        source_for({"source": "image-folder", "path": str(tmp_path / "missing")}).check()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        source_for({"source": "image-folder", "path": str(tmp_path)}).check()
    write_image(tmp_path / "loose.png", np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="sub-folders"):
        source_for({"source": "image-folder", "path": str(tmp_path), "labels": True}).check()


# ---- npz ------------------------------------------------------------------------------------------


def test_npz_images_labels_and_grayscale(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 1, 0]))
    source = source_for({"source": "npz", "path": str(tmp_path / "d.npz")})
    source.check()
    split = source.split("train")
    assert torch.equal(split.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert source.num_classes == 3 and split[3][1] == 1
    np.savez(tmp_path / "g.npz", images=images[..., :1])
    gray = source_for({"source": "npz", "path": str(tmp_path / "g.npz")}).split("train")
    assert gray.images.shape == (5, 3, 32, 32) and gray.labels is None


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 64, 64, 3), dtype=np.uint8), "64x64 images but data.resolution = 32"),
        (np.zeros((4, 32, 32, 3), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 32, 32), dtype=np.uint8), "must be uint8 (N, H, W, C)"),
    ],
)
def test_npz_errors(tmp_path, array, message):
    np.savez(tmp_path / "d.npz", images=array)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        source_for({"source": "npz", "path": str(tmp_path / "d.npz")}).check()


def test_npz_missing_file_and_key(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        source_for({"source": "npz", "path": str(tmp_path / "none.npz")}).check()
    np.savez(tmp_path / "d.npz", pixels=np.zeros((1, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="has no array 'images'.*pixels"):
        source_for({"source": "npz", "path": str(tmp_path / "d.npz")}).check()


# ---- cifar ----------------------------------------------------------------------------------------


def write_fake_cifar10(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, handle)


def test_cifar10_from_a_local_root(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    write_fake_cifar10(tmp_path)
    monkeypatch.setattr(
        cifar, "check_integrity", lambda *args, **kwargs: True
    )  # fake files, real loader
    source = source_for({"source": "cifar10", "root": str(tmp_path)})
    source.check()
    train, test = source.split("train"), source.split("test")
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert source.num_classes == 10


def test_cifar_missing_files_say_where_to_put_them(tmp_path, cli):
    with pytest.raises(DataError, match="cifar-10-batches-py lacks data_batch_1"):
        source_for({"source": "cifar10", "root": str(tmp_path)}).check()
    result = cli(
        "train", "sagan_cifar10", "--set", f"data.root={tmp_path}", "--results", str(tmp_path / "r")
    )
    assert_clean_error(result, "cifar-10-python.tar.gz", "data.download = true", str(tmp_path))
    assert not (tmp_path / "r").exists()  # nothing started


def test_cifar_wrong_resolution(tmp_path):
    with pytest.raises(DataError, match="32x32"):
        source_for({"source": "cifar10", "root": str(tmp_path)}, resolution=64).check()


@pytest.mark.parametrize(
    "setup, fragment",
    [
        ("empty", "holds no .png"),
        ("unreadable", "Cannot read image"),
    ],
)
def test_bad_data_stops_train_before_any_work(tmp_path, cli, setup, fragment):
    folder = tmp_path / "images"
    folder.mkdir()
    if setup == "unreadable":
        (folder / "x.png").write_bytes(b"junk")
    result = cli(
        "train",
        "smoke",
        "--set",
        "data.source=image-folder",
        "--set",
        f"data.path={folder}",
        "--results",
        str(tmp_path / "r"),
    )
    assert_clean_error(result, fragment)
    assert not (tmp_path / "r").exists()


# ---- the batch stream ----------------------------------------------------------------------------


def test_batch_order_resumes_exactly_from_a_position():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    data = TensorImageSet(images, torch.arange(10))
    full = BatchStream(
        data, 4, seed=3, device=torch.device("cpu"), hflip=True, resident_limit=10**9
    )
    batches = [full.next() for _ in range(6)]  # crosses two epoch boundaries
    resumed = BatchStream(
        data, 4, seed=3, device=torch.device("cpu"), hflip=True, position=8, resident_limit=10**9
    )
    for expected in batches[2:]:
        images_out, labels_out = resumed.next()
        assert torch.equal(images_out, expected[0]) and torch.equal(labels_out, expected[1])
    epoch = torch.cat([batch_indices(10, 3, 0, 10)])
    assert sorted(epoch.tolist()) == list(range(10))  # every image once per epoch


def test_streaming_and_resident_paths_give_identical_batches():
    source = source_for({"source": "shapes", "num_images": 40})
    split = source.split("train")
    kwargs = dict(batch_size=8, seed=1, device=torch.device("cpu"), hflip=True)
    resident = BatchStream(split, resident_limit=10**9, **kwargs)
    streamed = BatchStream(split, resident_limit=0, workers=0, **kwargs)
    assert resident.resident and not streamed.resident
    for _ in range(7):
        a, b = resident.next(), streamed.next()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= -1 and a[0].max() <= 1


def image_sets(resolution: int = 32) -> dict[str, torch.Tensor]:
    """Fixed image sets from real to hopeless, as a structural score must order them."""
    import torch.nn.functional as F

    from sagan_cli.datasets.shapes import PALETTE

    real = source_for({"source": "shapes", "num_images": 256}, resolution).split("train").images
    rng = torch.Generator().manual_seed(1)
    noisy = (real.float() + 3 * torch.randn(real.shape, generator=rng)).round().clamp(0, 255)
    weights = torch.exp(-((torch.arange(5.0) - 2) ** 2) / 2)
    weights /= weights.sum()
    blurred = F.pad(real.float(), (2, 2, 2, 2), mode="replicate")
    blurred = F.conv2d(blurred, weights.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
    blurred = F.conv2d(blurred, weights.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blobs = torch.zeros(256, 3, 32, 32)
    for index in range(256):  # soft colour blobs on a dark background, not mirrored
        image = torch.rand(3, 1, 1, generator=rng) * 0.25 * torch.ones(3, 32, 32)
        for _ in range(3):
            colour = PALETTE[int(torch.randint(len(PALETTE), (1,), generator=rng))]
            cx, cy = torch.rand(2, generator=rng) * 32
            radius = 2 + 5 * torch.rand(1, generator=rng)
            alpha = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2))
            image = image * (1 - alpha) + colour[:, None, None] * alpha
        blobs[index] = image * 255
    return {
        "real": real,
        "slight noise": noisy.to(torch.uint8),
        "blurred": blurred.round().clamp(0, 255).to(torch.uint8),
        "blobs": blobs.round().to(torch.uint8),
        "uniform noise": torch.randint(0, 256, real.shape, generator=rng, dtype=torch.uint8),
        "grey": torch.full_like(real, 128),
        "blank": torch.full_like(real, 20),
    }


def test_structural_score_orders_real_noisy_blurred_blobs_and_junk():
    scores = {name: structural_score(images)["structure"] for name, images in image_sets().items()}
    assert scores["real"] == 0.0
    assert 0 < scores["slight noise"] < scores["blurred"] < scores["blobs"]
    for junk in ("uniform noise", "grey", "blank"):
        assert scores[junk] > 1.5 * scores["blobs"], (junk, scores)
