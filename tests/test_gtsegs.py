"""The gtsegs_ijcv.mat reader, dataset and writer (docs/protocols.md, section 1)."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from palrp.data.gtsegs import DOWNLOAD_URL, GtSegsFile, ImageNetSegDataset, write_gtsegs


def _sample(seed: int, shapes):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    masks = [(rng.uniform(size=(h, w)) > 0.6).astype(np.uint8) for h, w in shapes]
    return images, masks


SHAPES = [(5, 9), (11, 4), (7, 7)]   # non-square, so a wrong transpose cannot pass


def _reference_layout(path, images, masks, mask_dtype=np.float64):
    """The original file's layout, built by hand with h5py (no MATLAB conventions beyond it)."""
    with h5py.File(path, "w") as f:
        store = f.create_group("#refs#")
        img_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        gt_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (img, mask) in enumerate(zip(images, masks)):
            d = store.create_dataset(f"i{i}", data=img.transpose(2, 1, 0))        # (3, W, H)
            m = store.create_dataset(f"m{i}", data=mask.T.astype(mask_dtype))      # (W, H)
            c = store.create_dataset(f"c{i}", data=np.array([[m.ref]], dtype=h5py.ref_dtype))  # (1, 1)
            img_refs[i, 0], gt_refs[i, 0] = d.ref, c.ref
        f.create_dataset("value/img", data=img_refs)
        f.create_dataset("value/gt", data=gt_refs)


def test_reader_on_hand_built_reference_layout(tmp_path):
    images, masks = _sample(0, SHAPES)
    path = tmp_path / "ref.mat"
    _reference_layout(path, images, masks)
    g = GtSegsFile(path)
    assert len(g) == 3
    for i in range(3):
        assert g.image(i).shape == SHAPES[i] + (3,) and g.image(i).dtype == np.uint8
        np.testing.assert_array_equal(g.image(i), images[i])
        np.testing.assert_array_equal(g.mask(i), masks[i])
        assert set(np.unique(g.mask(i))) <= {0, 1}
    np.testing.assert_array_equal(g.image(-1), images[-1])
    with pytest.raises(IndexError):
        g.image(3)


def test_writer_layout_and_round_trip(tmp_path):
    images, masks = _sample(1, SHAPES)
    path = write_gtsegs(tmp_path / "w.mat", images, masks)
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:
        assert f["value/img"].shape == (3, 1) and f["value/img"].dtype == h5py.ref_dtype
        assert f["value/gt"].shape == (3, 1)
        raw = f[f["value/img"][0, 0]]
        assert raw.shape == (3, SHAPES[0][1], SHAPES[0][0]) and raw.dtype == np.uint8
        holder = f[f["value/gt"][1, 0]]
        assert holder.shape == (1, 1) and holder.dtype == h5py.ref_dtype
        assert f[holder[0, 0]].shape == (SHAPES[1][1], SHAPES[1][0])
        assert f["value"].attrs["MATLAB_class"] == b"struct"
    g = GtSegsFile(path)
    for i in range(3):
        np.testing.assert_array_equal(g.image(i), images[i])
        np.testing.assert_array_equal(g.mask(i), masks[i])


def test_dataset_preprocessing(tmp_path):
    images, masks = _sample(2, SHAPES)
    images[0][:] = (10, 128, 250)    # constant colour: normalised values known exactly
    path = write_gtsegs(tmp_path / "d.mat", images, masks)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = ImageNetSegDataset(path, (6, 8), mean, std)
    x, m, idx = ds[0]
    assert x.shape == (3, 6, 8) and m.shape == (6, 8) and m.dtype == torch.int64 and idx == 0
    expect = (torch.tensor([10, 128, 250]) / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(x[:, 3, 4], expect.float())
    # bilinear image / nearest mask resize without crop, as PIL does it
    x, m, _ = ds[1]
    ref = np.asarray(Image.fromarray(images[1]).resize((8, 6), Image.BILINEAR)) / 255.0
    torch.testing.assert_close(x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1),
                               torch.from_numpy(ref).permute(2, 0, 1).float(), atol=1e-5, rtol=0)
    ref_m = np.asarray(Image.fromarray(masks[1]).resize((8, 6), Image.NEAREST))
    np.testing.assert_array_equal(m.numpy(), ref_m)
    assert len(ImageNetSegDataset(path, 4, mean, std, limit=2)) == 2


def test_dataloader_with_workers(tmp_path):
    images, masks = _sample(3, [(9, 12)] * 6)
    path = write_gtsegs(tmp_path / "l.mat", images, masks)
    ds = ImageNetSegDataset(path, 8, (0.5,) * 3, (0.5,) * 3)
    _ = ds[0]                                   # opened in the parent before the workers fork
    pickle.loads(pickle.dumps(ds))              # picklable (spawn start method)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    xs, ms, idx = zip(*loader)
    assert torch.cat(idx).tolist() == list(range(6))
    for i in range(6):
        x, m, _ = ds[i]
        torch.testing.assert_close(torch.cat(xs)[i], x)
        assert torch.equal(torch.cat(ms)[i], m)


def test_missing_file_names_download_and_demo(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        GtSegsFile(tmp_path / "gtsegs_ijcv.mat")
    msg = str(e.value)
    assert DOWNLOAD_URL in msg and "--demo" in msg and "\n" not in msg


def test_corrupt_and_wrong_layout(tmp_path):
    bad = tmp_path / "corrupt.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5" + bytes(200))
    with pytest.raises(ValueError, match="not a readable HDF5"):
        GtSegsFile(bad)
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f.create_dataset("value/img", data=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="layout.*no dataset /value/gt"):
        GtSegsFile(other)
    with h5py.File(other, "w") as f:
        f.create_dataset("value/img", data=np.zeros((3, 1)))
        f.create_dataset("value/gt", data=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="expected object references"):
        GtSegsFile(other)
    images, masks = _sample(4, SHAPES)
    with pytest.raises(ValueError, match="mask 0 has shape"):
        write_gtsegs(tmp_path / "x.mat", images, [masks[1], masks[0], masks[2]])
