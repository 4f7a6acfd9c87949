"""PNGDataset + collate_png on the real COCO panoptic sample and a synthetic root."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epng.data.dataset import PNGDataset, collate_png
from epng.data.input_format import InputFormat
from epng.data.panoptic import PanopticIndex, phrase_masks, segment_pixel_counts
from epng.data.png_format import load_narratives
from epng.data.transforms import valid_size
from epng.io.panoptic_png import read_id_png

SPLIT = "val2017"
META_KEYS = {"narrative", "image_id", "phrase_indices", "orig_size", "valid_size", "truncated_phrase_indices"}


def _areas(sample_json) -> dict[int, dict[int, int]]:
    return {a["image_id"]: {s["id"]: s["area"] for s in a["segments_info"]} for a in sample_json["annotations"]}


def test_gt_at_original_resolution_matches_json_area(real_root, sample_json, real):
    """Union of a phrase's segments = sum of their json areas (segments are disjoint)."""
    panoptic = PanopticIndex(real_root / "annotations" / f"panoptic_{SPLIT}.json")
    narratives, report = load_narratives(real_root / "annotations" / f"png_coco_{SPLIT}.json", panoptic)
    assert [n.index for n in narratives] == [0, 1] and report.skipped == {"no grounded phrase": 1}
    areas = _areas(sample_json)
    for n, texts in zip(narratives, real.phrases):
        assert [p.text for p in n.phrases] == texts
        id_map = read_id_png(real_root / "annotations" / "panoptic_segmentation" / SPLIT / f"{n.image_id:012d}.png")
        masks = phrase_masks(id_map, [p.segment_ids for p in n.phrases])
        assert masks.dtype == bool and masks.shape == (len(n.phrases), *id_map.shape)
        for p, m in zip(n.phrases, masks):
            assert m.sum() == sum(areas[n.image_id][s] for s in p.segment_ids), p.text
            assert np.array_equal(m, np.isin(id_map, p.segment_ids))
        counts = segment_pixel_counts(id_map, list(areas[n.image_id]) + [123])
        assert counts == {**areas[n.image_id], 123: 0}


def test_phrase_properties_of_real_narrative(real_root, real):
    panoptic = PanopticIndex(real_root / "annotations" / f"panoptic_{SPLIT}.json")
    narratives, _ = load_narratives(real_root / "annotations" / f"png_coco_{SPLIT}.json", panoptic)
    rugby = narratives[0]
    by_text = {p.text: p for p in rugby.phrases}
    assert by_text["rugby players"].is_plural and by_text["rugby players"].is_thing
    assert not by_text["grass"].is_plural and not by_text["grass"].is_thing
    assert by_text["One player"].segment_ids == by_text["he"].segment_ids  # co-reference, two phrases
    assert by_text["spectators"].is_thing  # crowd segments are ordinary targets
    assert "picture" not in by_text  # ungrounded noun


@pytest.mark.parametrize("resize", ["square", "letterbox"])
def test_batch_contract_on_real_sample(real_root, tokenizer, resize, real):
    size = 256
    ds = PNGDataset(real_root, SPLIT, InputFormat(tokenizer, size, resize))
    assert len(ds) == 2
    samples = [ds[0], ds[1]]
    batch = collate_png(samples)
    b, p = 2, max(len(t) for t in real.phrases)
    assert batch["images"].shape == (b, 3, size, size) and batch["images"].dtype == torch.float32
    t = batch["input_ids"].shape[1]
    assert batch["input_ids"].dtype == torch.int64 and batch["attention_mask"].dtype == torch.int64
    assert batch["phrase_token_mask"].shape == (b, p, t) and batch["phrase_token_mask"].dtype == torch.bool
    assert batch["phrase_mask"].shape == (b, p) and batch["phrase_mask"].dtype == torch.bool
    assert batch["gt_masks"].shape == (b, p, size, size) and batch["gt_masks"].dtype == torch.bool
    assert batch["n_skipped"] == 0 and batch["skipped"] == []

    for i, (rec, texts) in enumerate(zip(real.narratives, real.phrases)):
        meta = batch["meta"][i]
        assert set(meta) == META_KEYS
        assert meta["narrative"] == i and meta["image_id"] == int(rec["image_id"])
        assert meta["phrase_indices"] == list(range(len(texts))) and meta["truncated_phrase_indices"] == []
        orig = (427, 640) if meta["image_id"] == real.rugby else (360, 640)
        assert meta["orig_size"] == orig
        vh, vw = meta["valid_size"]
        assert (vh, vw) == ((size, size) if resize == "square" else (round(orig[0] * size / orig[1]), size))

        enc = tokenizer(rec["caption"])["input_ids"]
        n_tok = len(enc)
        assert batch["input_ids"][i, :n_tok].tolist() == enc
        assert batch["attention_mask"][i].tolist() == [1] * n_tok + [0] * (t - n_tok)
        assert (batch["input_ids"][i, n_tok:] == tokenizer.pad_token_id).all()
        assert batch["phrase_mask"][i].tolist() == [True] * len(texts) + [False] * (p - len(texts))
        for k, text in enumerate(texts):  # the pieces of each phrase are the pieces of its text
            ids = batch["input_ids"][i][batch["phrase_token_mask"][i, k]].tolist()
            assert tokenizer.convert_ids_to_tokens(ids) == tokenizer.tokenize(text)
        assert not batch["phrase_token_mask"][i, len(texts) :].any()
        assert not batch["phrase_token_mask"][i, :, n_tok:].any()
        assert not batch["phrase_token_mask"][i, :, 0].any()  # [CLS]

        # gt vs an independent per-segment loop over the resized id map
        ids_map = samples[i].id_map
        assert ids_map.dtype in (torch.int32, torch.int64) and ids_map.shape == (size, size)
        for k, segs in enumerate(samples[i].phrase_segments):
            ref = torch.zeros((size, size), dtype=torch.bool)
            for s in segs:
                ref |= ids_map == s
            assert torch.equal(batch["gt_masks"][i, k], ref)
        gt = batch["gt_masks"][i]
        assert set(gt.unique().tolist()) <= {0.0, 1.0}
        assert not gt[len(texts) :].any()  # padding phrases
        assert not gt[:, vh:].any() and not gt[:, :, vw:].any()  # padding pixels
        if resize == "letterbox":
            assert (batch["images"][i, :, vh:] == 0).all()


def test_resized_gt_area_scales_with_the_image(real_root, tokenizer, sample_json, real):
    size = 320
    ds = PNGDataset(real_root, SPLIT, InputFormat(tokenizer, size, "letterbox"))
    sample = ds[0]
    areas = _areas(sample_json)[real.rugby]
    scale2 = (size / 640) ** 2
    for segs in sample.phrase_segments:
        expected = sum(areas[s] for s in segs) * scale2
        got = sum(int((sample.id_map == s).sum()) for s in segs)
        assert abs(got - expected) <= 0.1 * expected + 30


def test_phrase_masks_match_loop():
    rng = np.random.default_rng(3)
    palette = torch.tensor([0, 5, 77, 70000, 5_000_001, 16777215], dtype=torch.int32)
    id_map = palette[torch.from_numpy(rng.integers(0, 6, size=(17, 23)))]
    sets = [(5,), (77, 70000), (16777215, 5, 123456), (999,), (70000,)]
    masks = torch.from_numpy(phrase_masks(id_map.numpy(), sets))
    assert masks.shape == (5, 17, 23) and masks.dtype == torch.bool
    for k, segs in enumerate(sets):
        ref = torch.zeros((17, 23), dtype=torch.bool)
        for s in segs:
            ref |= id_map == s
        assert torch.equal(masks[k], ref)
        assert torch.equal(masks[k], torch.isin(id_map, torch.tensor(segs, dtype=torch.int32)))


def test_truncated_phrases_are_reported(real_root, tokenizer, real):
    caption = real.narratives[0]["caption"]
    enc = tokenizer(caption, return_offsets_mapping=True)
    # cut right after the pieces of "ball" (phrase 3); later phrases are lost
    ball_end = caption.index("ball") + len("ball")
    n_keep = 1 + sum(1 for s, e in enc["offset_mapping"][1:-1] if e <= ball_end)
    ds = PNGDataset(real_root, SPLIT, InputFormat(tokenizer, 64, max_length=n_keep + 1))
    rep = ds.report()
    assert rep.n_truncated_phrases >= 4 and rep.n_truncated_narratives >= 1
    batch = collate_png([ds[0]])
    meta = batch["meta"][0]
    assert meta["phrase_indices"] == [0, 1, 2, 3]
    assert meta["truncated_phrase_indices"] == [4, 5, 6, 7]
    assert batch["phrase_mask"][0].tolist() == [True] * 4
    assert batch["input_ids"].shape[1] == n_keep + 1
    assert "lost to max_length" in rep.summary()


def test_dataloader_with_workers_carries_skip_counts(synthetic, tokenizer):
    # corrupt the second image: found lazily inside the worker, counted in the batch
    synthetic.image_file(synthetic.image_ids[1]).write_bytes(b"garbage" * 50)
    ds = PNGDataset(synthetic.root, synthetic.split, InputFormat(tokenizer, 32), mode="skip")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_png)
    batches = list(loader)
    assert len(batches) == 1
    batch = batches[0]
    assert batch["images"].shape[0] == 1 and batch["n_skipped"] == 1
    assert batch["skipped"][0]["reason"] == "corrupt image" and batch["skipped"][0]["narrative"] == 1
    assert ds.report().skipped.get("corrupt image", 0) == 0  # not yet folded in
    ds.note_skipped(batch)
    assert ds.report().skipped["corrupt image"] == 1 and ds.report().n_skipped == 1


def test_all_skipped_batch_is_empty(synthetic, tokenizer):
    for image_id in synthetic.image_ids:
        synthetic.image_file(image_id).write_bytes(b"garbage")
    ds = PNGDataset(synthetic.root, synthetic.split, InputFormat(tokenizer, 32), mode="skip")
    batch = collate_png([ds[0], ds[1]])
    assert batch["images"].shape == (0, 3, 32, 32) and batch["meta"] == [] and batch["n_skipped"] == 2


def test_synthetic_sample_values(synthetic, tokenizer):
    fmt = InputFormat(tokenizer, (48, 64), "square", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    ds = PNGDataset(synthetic.root, synthetic.split, fmt)
    s = ds[0]
    assert s.valid_size == valid_size((24, 32), (48, 64), "square") == (48, 64)
    a, b, c = (seg for segs in s.phrase_segments for seg in segs)
    # exact 2x upscale: every id pixel becomes a 2x2 block
    assert int((s.id_map == a).sum()) == 4 * synthetic.areas[synthetic.image_ids[0]][a]
    assert int((s.id_map == c).sum()) == 4 * synthetic.areas[synthetic.image_ids[0]][c]
    # with mean 0 / std 1 the image is in [0, 1]; segment a was painted red
    red = s.image[:, (s.id_map == a)]
    assert red[0].mean() > 0.7 and red[2].mean() < 0.3
