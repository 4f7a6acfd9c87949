"""Decoding, resizing and normalisation (epng.data.transforms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from epng.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResizeNormalize,
    resize_id_map,
    valid_size,
)
from epng.errors import ConfigError, DataError
from epng.io.images import decode_image_file


@pytest.mark.parametrize(
    "orig, size, mode, expected",
    [
        ((427, 640), 640, "square", (640, 640)),
        ((427, 640), 640, "letterbox", (427, 640)),
        ((360, 640), 320, "letterbox", (180, 320)),
        ((640, 427), 640, "letterbox", (640, 427)),
        ((100, 50), 64, "letterbox", (64, 32)),
        ((30, 50), (40, 20), "letterbox", (12, 20)),  # width-limited: scale 20/50 < 40/30
        ((30, 50), (20, 40), "square", (20, 40)),
    ],
)
def test_valid_size(orig, size, mode, expected):
    assert valid_size(orig, size, mode) == expected
    if mode == "letterbox":  # aspect kept to within rounding, long side fills the target
        (h, w), (vh, vw) = orig, expected
        assert abs(vh / vw - h / w) <= (1 / vw + 1 / vh) * max(h / w, 1) + 1e-9


def test_bad_resize_mode():
    with pytest.raises(ConfigError):
        valid_size((10, 10), 8, "crop")


def _random_ids(h, w, seed=0):
    rng = np.random.default_rng(seed)
    palette = np.array([0, 1, 255, 65536, 5314498, 16757838, 256**3 - 1], dtype=np.int64)
    return palette[rng.integers(0, len(palette), size=(h, w))]


@pytest.mark.parametrize("mode", ["square", "letterbox"])
def test_id_map_resize_is_exact_nearest(mode):
    ids = _random_ids(30, 50)
    out = resize_id_map(ids, 20, mode)
    assert out.dtype == torch.int64 and out.shape == (20, 20)
    vh, vw = valid_size(ids.shape, 20, mode)
    # independent: nearest neighbour with half-pixel centres, source = floor((dst + 0.5) * in / out)
    for i in range(vh):
        for j in range(vw):
            si = min(math.floor((i + 0.5) * 30 / vh), 29)
            sj = min(math.floor((j + 0.5) * 50 / vw), 49)
            assert out[i, j] == ids[si, sj]
    assert (out[vh:] == 0).all() and (out[:, vw:] == 0).all()
    # ids up to 2**24 are exact in float32, so torch's nearest-exact gives the same map
    ref = F.interpolate(torch.from_numpy(ids).float()[None, None], size=(vh, vw), mode="nearest-exact")[0, 0].long()
    assert torch.equal(out[:vh, :vw], ref)


def test_id_map_dtype_kept_int32():
    ids = torch.from_numpy(_random_ids(9, 7)).to(torch.int32)
    out = resize_id_map(ids, (18, 14), "square")
    assert out.dtype == torch.int32
    assert torch.equal(out, ids.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_transform_letterbox_geometry_and_normalisation():
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    h, w, color = 30, 60, (200, 100, 50)
    image = torch.tensor(color, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).contiguous()
    ids = torch.full((h, w), 7, dtype=torch.int64)
    x, out_ids, vs = ResizeNormalize(40, "letterbox", mean, std)(image, ids)
    assert vs == (20, 40) and x.shape == (3, 40, 40) and x.dtype == torch.float32
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(color, mean, std)]).view(3, 1, 1)
    assert torch.allclose(x[:, :20], expected.expand(3, 20, 40), atol=1e-5)
    assert (x[:, 20:] == 0).all()  # padding = the mean colour after normalisation
    assert (out_ids[:20] == 7).all() and (out_ids[20:] == 0).all()


def test_transform_square_image_and_ids_stay_aligned():
    # left third red = id 3, rest blue = id 9; after a stretch both must agree away from the edge
    h, w = 27, 45
    ids = torch.full((h, w), 9, dtype=torch.int64)
    ids[:, :15] = 3
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    image[0][ids == 3] = 255
    image[2][ids == 9] = 255
    x, out_ids, vs = ResizeNormalize((32, 64), "square", IMAGENET_MEAN, IMAGENET_STD)(image, ids)
    assert vs == (32, 64)
    red = x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert set(out_ids.unique().tolist()) == {3, 9}
    boundary = int(round(15 * 64 / 45))
    cols = torch.arange(64)
    away = (cols - boundary).abs() > 2
    assert (red[:, away & (cols < boundary)] > 0.95).all() and (out_ids[:, away & (cols < boundary)] == 3).all()
    assert (red[:, away & (cols > boundary)] < 0.05).all() and (out_ids[:, away & (cols > boundary)] == 9).all()


def test_decode_gray_png_gives_three_equal_channels(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10) * 2
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    x = decode_image_file(tmp_path / "g.png")
    assert x.shape == (3, 12, 10) and x.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(x[c], torch.from_numpy(gray))


def test_decode_real_jpeg(sample_dir):
    x = decode_image_file(sample_dir / "images" / "000000142238.jpg")
    assert x.shape == (3, 427, 640)
    ref = np.asarray(Image.open(sample_dir / "images" / "000000142238.jpg").convert("RGB"))
    # the same JPEG decoded by another library: equal up to decoder rounding
    assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - ref.astype(int)).mean() < 2.0


def test_decode_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jpg: image file not found"):
        decode_image_file(tmp_path / "missing.jpg")
    bad = tmp_path / "garbage.jpg"
    bad.write_bytes(b"\x00not a jpeg at all" * 20)
    with pytest.raises(DataError, match=r"garbage\.jpg: corrupt"):
        decode_image_file(bad)
