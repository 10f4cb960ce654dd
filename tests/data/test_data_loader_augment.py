"""The batch loader (seeded order, DDP sharding, resumable) and the batched augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from beyond_attention.data import (
    BatchLoader,
    ImageDataset,
    Normalize,
    TrainAugment,
    mix_batch,
    one_hot_smooth,
)


def dataset(n=23, c=3, h=8, w=8, k=4, seed=0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    return ImageDataset(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8),
                        rng.integers(0, k, n), [f"c{i}" for i in range(k)])


def test_dataset_checks_and_subset():
    ds = dataset()
    with pytest.raises(ValueError, match="labels must lie in"):
        ImageDataset(ds.images, np.full(len(ds), 9), ds.classes)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(ds.images.astype(np.float32), ds.labels, ds.classes)
    sub = ds.subset(10)
    assert len(sub) == 10 and sub.subset(10) is sub
    again = ds.subset(10)
    assert np.array_equal(sub.images, again.images)  # fixed, independent of any seed state
    rows = {ds.images[i].tobytes() for i in range(len(ds))}
    assert all(sub.images[i].tobytes() in rows for i in range(10))


def test_loader_order_is_seeded_by_epoch():
    ds = dataset()
    loader = BatchLoader(ds, 5, shuffle=True, seed=7)
    loader.set_epoch(3)
    expected = torch.randperm(len(ds), generator=torch.Generator().manual_seed(7 + 3))
    got = torch.cat([torch.from_numpy(np.asarray(lab)) for _, lab in loader])
    assert torch.equal(got, torch.from_numpy(ds.labels)[expected])
    first = [b[0] for b in loader]
    loader.set_epoch(4)
    assert not all(torch.equal(a, b) for a, b in zip(first, [b[0] for b in loader], strict=False))


def test_loader_resumes_mid_epoch_and_prefetch_is_identical():
    ds = dataset(n=40)
    plain = BatchLoader(ds, 6, shuffle=True, seed=1, drop_last=True)
    threaded = BatchLoader(ds, 6, shuffle=True, seed=1, drop_last=True, workers=2)
    for loader in (plain, threaded):
        loader.set_epoch(2)
    full = list(plain)
    assert len(full) == len(plain) == 40 // 6
    assert all(a[0].dtype == torch.uint8 and a[0].shape == (6, 3, 8, 8) for a in full)
    for a, b in zip(full, threaded, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    tail = list(plain.iter_from(4))
    assert len(tail) == len(full) - 4
    for a, b in zip(full[4:], tail, strict=True):
        assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("world", [2, 3])
def test_loader_shards_like_distributed_sampler(world):
    n = 23
    ds = dataset(n=n)
    shards = []
    for rank in range(world):
        loader = BatchLoader(ds, 4, shuffle=True, seed=5, rank=rank, world_size=world)
        loader.set_epoch(1)
        shards.append(loader.indices())
    # equal sizes, padded by repeating the start of the permutation, as DistributedSampler
    assert {len(s) for s in shards} == {math.ceil(n / world)}
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(6)).tolist()
    total = math.ceil(n / world) * world
    padded = perm + perm[: total - n]
    for rank, s in enumerate(shards):
        assert s.tolist() == padded[rank:total:world]
    # evaluation: no padding, every sample exactly once
    seen = []
    for rank in range(world):
        seen += BatchLoader(ds, 4, rank=rank, world_size=world, pad=False).indices().tolist()
    assert sorted(seen) == list(range(n))


def test_normalize_matches_float64_reference():
    ds = dataset(n=4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = torch.from_numpy(ds.images)
    got = Normalize(mean, std)(x)
    ref = (ds.images.astype(np.float64) / 255.0 - np.array(mean)[:, None, None]) \
        / np.array(std)[:, None, None]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    resized = Normalize(mean, std, size=(16, 12))(x)
    assert resized.shape == (4, 3, 16, 12)


def test_train_augment_shapes_ranges_crop_and_flip():
    torch.manual_seed(0)
    ds = dataset(n=16, h=10, w=10)
    x = torch.from_numpy(ds.images)
    labels = torch.from_numpy(ds.labels)
    ident = TrainAugment((0.0,) * 3, (1.0,) * 3, 4, (10, 10), crop_padding=0, hflip=0.0)
    out, t = ident(x, labels)
    assert torch.equal(t, labels)
    np.testing.assert_allclose(out.numpy(), ds.images / 255.0, atol=1e-6)
    flip = TrainAugment((0.0,) * 3, (1.0,) * 3, 4, (10, 10), crop_padding=0, hflip=1.0)
    np.testing.assert_allclose(flip(x, labels)[0].numpy(), ds.images[..., ::-1] / 255.0,
                               atol=1e-6)
    crop = TrainAugment((0.0,) * 3, (1.0,) * 3, 4, (10, 10), crop_padding=3, hflip=0.0)
    out = crop(x, labels)[0]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # each output is a 10x10 window of the zero-padded input
    padded = np.pad(ds.images / 255.0, ((0, 0), (0, 0), (3, 3), (3, 3)))
    for i in range(4):
        windows = [padded[i, :, dy:dy + 10, dx:dx + 10] for dy in range(7) for dx in range(7)]
        assert min(np.abs(w - out[i].numpy()).max() for w in windows) < 1e-6


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_policies_keep_shape_and_range(policy, channels):
    torch.manual_seed(1)
    ds = dataset(n=8, c=channels, h=16, w=16)
    aug = TrainAugment((0.0,) * channels, (1.0,) * channels, 4, (16, 16),
                       randaugment=(2, 9) if policy == "randaugment" else None,
                       trivialaugment=policy == "trivialaugment")
    out, _ = aug(torch.from_numpy(ds.images), torch.from_numpy(ds.labels))
    assert out.shape == (8, channels, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


def test_one_hot_smooth():
    t = one_hot_smooth(torch.tensor([2, 0]), 4, 0.2)
    assert torch.allclose(t, torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]))


def test_mixup_targets_sum_to_one_and_match_pixels():
    torch.manual_seed(3)
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    mixed, targets, lam = mix_batch(x, labels, 4, mixup_alpha=0.8, smoothing=0.1)
    torch.testing.assert_close(targets.sum(-1), torch.ones(6, dtype=targets.dtype))
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    ref = torch.zeros(6, 4, dtype=targets.dtype)
    for i in range(6):
        for label, w in ((labels[i], lam), (labels[5 - i], 1 - lam)):
            ref[i] += w * 0.025
            ref[i, label] += w * 0.9
    torch.testing.assert_close(targets, ref)


def test_cutmix_lambda_is_the_kept_area():
    torch.manual_seed(4)
    x = torch.rand(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3])
    for _ in range(5):
        mixed, targets, lam = mix_batch(x, labels, 4, cutmix_alpha=1.0)
        pasted = (mixed != x).any(1)[0].float().mean().item()  # pixels from the other image
        assert lam == pytest.approx(1 - pasted, abs=1e-9)
        torch.testing.assert_close(targets.sum(-1), torch.ones(4))
        assert targets[0, 0].item() == pytest.approx(lam) and targets[0, 3].item() == \
            pytest.approx(1 - lam)


def test_train_augment_with_mixing_gives_soft_targets():
    torch.manual_seed(5)
    ds = dataset(n=8, c=1)
    aug = TrainAugment((0.5,), (0.25,), 4, (8, 8), mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    out, targets = aug(torch.from_numpy(ds.images), torch.from_numpy(ds.labels))
    assert out.shape == (8, 1, 8, 8) and targets.shape == (8, 4)
    torch.testing.assert_close(targets.sum(-1), torch.ones(8))
    with pytest.raises(ValueError, match="exclusive"):
        TrainAugment((0.5,), (0.25,), 4, (8, 8), randaugment=(2, 9), trivialaugment=True)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))
