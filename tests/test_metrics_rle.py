"""COCO RLE helpers: round trips against pycocotools and validation of malformed input."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from helpers_metrics import rle_area

from epng.io.rle import (
    InvalidRLE,
    decode_counts_string,
    decode_rle,
    encode_counts_string,
    encode_mask,
    normalize_rle,
)


def _random_masks(n=60, seed=0):
    rng = np.random.default_rng(seed)
    for k in range(n):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = rng.random((h, w)) < rng.random()
        if k % 7 == 0:
            mask[:] = False
        if k % 11 == 0:
            mask[:] = True
        yield mask


def test_round_trip_matches_pycocotools():
    for mask in _random_masks():
        ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle = encode_mask(mask)
        assert rle["size"] == list(mask.shape)
        assert isinstance(rle["counts"], str)
        assert rle["counts"] == ref["counts"].decode("ascii")
        runs = decode_counts_string(rle["counts"])
        assert runs.sum() == mask.size
        assert encode_counts_string(runs) == rle["counts"]
        assert np.array_equal(decode_rle(rle), mask)
        assert rle_area(rle) == mask.sum()


def test_large_runs_and_long_strings():
    mask = np.zeros((1000, 1500), dtype=bool)
    mask[400:420, 1000:1400] = True
    rle = encode_mask(mask)
    assert np.array_equal(decode_rle(rle, (1000, 1500)), mask)
    stripes = np.zeros((300, 400), dtype=bool)
    stripes[::2, :] = True  # thousands of short runs
    assert np.array_equal(decode_rle(encode_mask(stripes)), stripes)


def test_uncompressed_counts_are_accepted():
    for mask in _random_masks(20, seed=3):
        runs = decode_counts_string(encode_mask(mask)["counts"]).tolist()
        rle = {"size": list(mask.shape), "counts": runs}
        assert np.array_equal(decode_rle(rle), mask)
        # and pycocotools agrees on the conversion
        ref = mask_utils.frPyObjects(rle, *mask.shape)
        assert normalize_rle(rle)["counts"] == ref["counts"]


def test_bytes_counts_are_accepted():
    mask = np.eye(4, dtype=bool)
    ref = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert np.array_equal(decode_rle({"size": [4, 4], "counts": ref["counts"]}), mask)


def test_empty_and_full_masks():
    for mask in (np.zeros((3, 5), bool), np.ones((3, 5), bool)):
        assert np.array_equal(decode_rle(encode_mask(mask)), mask)
    assert decode_rle({"size": [0, 4], "counts": "0"}).shape == (0, 4)


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ("abc", "COCO RLE object"),
        ({"counts": "0"}, "no 'size'"),
        ({"size": [2, 2]}, "no 'counts'"),
        ({"size": [2], "counts": "4"}, "two integers"),
        ({"size": [2.0, 2], "counts": "4"}, "two integers"),
        ({"size": [True, 2], "counts": "4"}, "two integers"),
        ({"size": [-2, -2], "counts": "4"}, "negative"),
        ({"size": [2, 2], "counts": 4}, "string or a list"),
        ({"size": [2, 2], "counts": "3"}, "add up to 3"),
        ({"size": [2, 2], "counts": "5"}, "add up to 5"),
        ({"size": [2, 2], "counts": "~~"}, "outside the RLE alphabet"),
        ({"size": [2, 2], "counts": "0 4"}, "outside the RLE alphabet"),
        ({"size": [2, 2], "counts": "4é"}, "non-ASCII"),
        ({"size": [2, 2], "counts": "P"}, "truncated"),  # 'P' = 32 + 48: continuation bit on the last char
        ({"size": [2, 2], "counts": "8"}, "add up to 8"),
        ({"size": [2, 2], "counts": "0O"}, "negative run"),  # 'O' = 31 + 48: one group with the sign bit -> -1
        ({"size": [2, 2], "counts": "PPPPPPPP0"}, "characters"),
        ({"size": [2, 2], "counts": [1, 2]}, "add up to 3"),
        ({"size": [2, 2], "counts": [5, -1]}, "negative"),
        ({"size": [2, 2], "counts": [2, 2.0]}, "list of integers"),
        ({"size": [2, 2], "counts": ""}, "add up to 0"),
    ],
)
def test_malformed_rle_raises(segmentation, message):
    with pytest.raises(InvalidRLE, match=message):
        normalize_rle(segmentation)


def test_size_must_match_expected():
    rle = encode_mask(np.zeros((4, 6), bool))
    normalize_rle(rle, (4, 6))
    with pytest.raises(InvalidRLE, match=r"\[4, 6\] does not match the image's original size \[6, 4\]"):
        normalize_rle(rle, (6, 4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decoder under numpy 2
def test_negative_delta_decodes_like_pycocotools():
    # runs whose stored deltas are negative (run m smaller than run m - 2)
    runs = [5, 1, 3, 9, 1, 2, 0, 4]
    text = encode_counts_string(runs)
    assert decode_counts_string(text).tolist() == runs
    h, w = 5, 5
    ref = mask_utils.decode({"size": [h, w], "counts": text.encode()})
    assert np.array_equal(decode_rle({"size": [h, w], "counts": text}), ref.astype(bool))
