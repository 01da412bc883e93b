"""Issue 22 (ground truth, summaries, text inputs): degenerate segmentation masks are counted and
left out of every metric; explain_text.py shows the most negative tokens; a text of special
tokens only and a text model with non-finite weights or results end in one line, non-zero."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import analyze_seg_results as seg
import explain_text
from conftest import make_timm_vit
from palrp.data.gtsegs import write_gtsegs
from palrp.metrics.segmentation import SegmentationAccumulator, degenerate_kind

ROOT = Path(__file__).resolve().parents[1]


# --- degenerate ground truth ---------------------------------------------------------------------

def test_accumulator_counts_and_excludes_degenerate_masks():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(5, 4, 4, generator=g)
    masks = (torch.rand(5, 8, 8, generator=g) > 0.5).long()
    masks[1] = 0                       # empty
    masks[3] = 1                       # all foreground
    assert degenerate_kind(masks) == [None, "empty", None, "full", None]
    both = SegmentationAccumulator()
    per = both.update(maps, masks)
    assert per["degenerate"] == [None, "empty", None, "full", None]
    assert per["ap"][1] is None and per["ap"][3] is None
    assert all(isinstance(per["ap"][i], float) for i in (0, 2, 4))
    clean = SegmentationAccumulator()
    clean.update(maps[[0, 2, 4]], masks[[0, 2, 4]])
    got, ref = both.compute(), clean.compute()
    assert got.pop("n_degenerate") == 2 and ref.pop("n_degenerate") == 0
    assert got == ref and got["n_images"] == 3
    resumed = SegmentationAccumulator.from_state_dict(json.loads(json.dumps(both.state_dict())))
    assert resumed.compute()["n_degenerate"] == 2
    only = SegmentationAccumulator()
    only.update(maps[[1, 3]], masks[[1, 3]])
    assert only.compute() == {"pixel_accuracy": None, "miou": None, "map": None,
                              "iou": [None, None], "n_images": 0, "n_degenerate": 2}


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """A tiny DeiT (with its head count in a sibling .json) and two gtsegs files: five images
    of which image 1 has an empty mask and image 3 an all-foreground one, and the three
    two-class images alone; plus a file whose every mask is empty."""
    root = tmp_path_factory.mktemp("seg")
    torch.save({"model": make_timm_vit(img_size=32, patch_size=8).state_dict()}, root / "tiny.pth")
    (root / "tiny.json").write_text('{"config": {"num_heads": 3}}')
    (root / "tiny.json").write_text(json.dumps({"config": {"num_heads": 3}}))
    rng = np.random.default_rng(5)
    images = [(rng.random((32, 36, 3)) * 255).astype("uint8") for _ in range(5)]
    masks = [(rng.random((32, 36)) > 0.5).astype("uint8") for _ in range(5)]
    masks[1][:] = 0
    masks[3][:] = 1
    write_gtsegs(root / "mixed.mat", images, masks)
    write_gtsegs(root / "clean.mat", [images[i] for i in (0, 2, 4)], [masks[i] for i in (0, 2, 4)])
    write_gtsegs(root / "empty.mat", images[:2], [np.zeros((32, 36), "uint8")] * 2)
    return root


def _seg(data, mat, out, *extra):
    return seg.main(["--method", "pa_lrp", "attnlrp", "--device", "cpu", "--num-examples", "0",
                     "--batch-size", "1", "--model", str(data / "tiny.pth"),
                     "--imagenet-seg-path", str(data / mat), "--output-dir", str(out), *extra])


def test_degenerate_masks_are_counted_reported_and_excluded(seg_data, tmp_path, capsys):
    assert _seg(seg_data, "mixed.mat", tmp_path / "mixed") == 0
    printed = capsys.readouterr().out
    assert _seg(seg_data, "clean.mat", tmp_path / "clean") == 0
    mixed_dir, clean_dir = tmp_path / "mixed" / "tiny" / "mean", tmp_path / "clean" / "tiny" / "mean"
    mixed = json.loads((mixed_dir / "results.json").read_text())
    clean = json.loads((clean_dir / "results.json").read_text())
    assert mixed["degenerate_masks"] == {"count": 2, "indices": [1, 3], "empty": [1],
                                         "all_foreground": [3]}
    assert clean["degenerate_masks"]["count"] == 0 and mixed["n_images"] == 5
    for name in ("pa_lrp", "attnlrp"):
        got, ref = dict(mixed["methods"][name]), dict(clean["methods"][name])
        assert got.pop("n_degenerate") == 2 and ref.pop("n_degenerate") == 0
        assert got == ref and got["n_images"] == 3          # the same numbers, bit for bit
    line = ("2 images with degenerate masks excluded (a mask without foreground or without "
            "background has no defined mAP or IoU): 1 empty, 1 all foreground; indices in "
            "results.json.")
    assert line in printed
    assert (mixed_dir / "results.md").read_text().rstrip("\n").endswith(line)
    assert "0 images with degenerate masks excluded" in (clean_dir / "results.md").read_text()
    csv_rows = (mixed_dir / "results.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",n_images,n_degenerate_excluded")
    assert all(row.endswith(",3,2") for row in csv_rows[1:])
    records = [json.loads(line) for line in
               (mixed_dir / "per_image" / "pa_lrp.rank0.jsonl").read_text().splitlines()]
    assert [r["degenerate"] for r in records] == [None, "empty", None, "full", None]
    assert [r["ap"] is None for r in records] == [False, True, False, True, False]


def test_every_mask_degenerate_is_one_line_and_no_table(seg_data, tmp_path):
    with pytest.raises(SystemExit) as exc:
        _seg(seg_data, "empty.mat", tmp_path)
    message = str(exc.value)
    assert message == (f"error: every one of the 2 images of {seg_data / 'empty.mat'} has a "
                       "degenerate mask (no foreground or no background), so no metric is "
                       "defined; check the ground-truth masks of that file")
    assert not list(tmp_path.rglob("results.*"))


def test_folder_of_the_previous_protocol_is_refused_in_one_line(seg_data, tmp_path):
    assert _seg(seg_data, "clean.mat", tmp_path) == 0
    run = tmp_path / "tiny" / "mean" / "run.json"
    record = json.loads(run.read_text())
    assert record["protocol_version"] == 2
    record["protocol_version"] = 1                 # a folder written before degenerate masks
    run.write_text(json.dumps(record))
    before = (tmp_path / "tiny" / "mean" / "results.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        _seg(seg_data, "clean.mat", tmp_path)
    message = str(exc.value)
    assert "\n" not in message and "(protocol_version differ: protocol_version 2 here, 1 there)" \
        in message and "--overwrite" in message
    assert (tmp_path / "tiny" / "mean" / "results.json").read_bytes() == before


# --- explain_text.py -----------------------------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "<s>", "</s>"] + (
    "the a movie film was is great bad awful plot acting and but not really good story").split()


def _save_lm(path, break_weights=None):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                        pad_token="[PAD]", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=0, tie_word_embeddings=False))
    if break_weights is not None:
        with torch.no_grad():
            break_weights(model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("lms")

    def nan(model):
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")

    def overflow(model):                       # finite weights whose logits overflow float32
        model.lm_head.weight.fill_(3e38)

    return {"good": _save_lm(root / "good"), "nan": _save_lm(root / "nan", nan),
            "overflow": _save_lm(root / "overflow", overflow)}


TEXT = "the movie was really good but the plot and acting was awful"


def test_summary_lists_the_most_negative_tokens(lms, tmp_path, capsys):
    explain_text.main([str(lms["good"]), "--text", TEXT, "--top-k", "2", "--output-dir",
                       str(tmp_path)])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "explanation.json").read_text())
    pa = np.array(data["maps"]["PA-LRP"])
    assert (pa < 0).sum() >= 2                    # the fixture has negative evidence
    top = out.split("rank   pos")[1].strip().splitlines()[1:3]        # the existing ranking
    assert [int(line.split()[1]) for line in top] == list(np.argsort(-pa)[:2])
    head = ("most negative PA-LRP relevance (evidence against the target; the 2 lowest tokens "
            "of the PA-LRP map, most negative first):")
    assert head in out
    rows = out.split(head)[1].strip().splitlines()[1:3]
    assert [int(r.split()[1]) for r in rows] == list(np.argsort(pa)[:2])
    assert [r.split()[2] for r in rows] == [data["tokens"][i] for i in np.argsort(pa)[:2]]
    np.testing.assert_allclose([float(r.split()[3]) for r in rows],
                               np.sort(pa)[:2] / np.abs(pa).max(), atol=1e-4)
    assert float(rows[0].split()[3]) < 0


def test_summary_says_when_nothing_is_negative(capsys):
    columns = ("PA-LRP", "AttnLRP", "PE-only")
    values = torch.tensor([0.5, 1.0, 0.0])
    explain_text.print_most_negative(values, ["a", "b", "c"], {n: values for n in columns},
                                     columns, 3)
    assert capsys.readouterr().out == ("\nmost negative PA-LRP relevance: no token has negative "
                                       "PA-LRP relevance\n")


def _cli(model, text, out):
    return subprocess.run([sys.executable, str(ROOT / "explain_text.py"), str(model), "--text",
                           text, "--output-dir", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_special_tokens_only_is_refused_in_one_line(lms, tmp_path):
    for text, shown in (("<s> </s> [PAD]", "<s> </s> [PAD]"),
                        ("zzz qqq", "[UNK]")):          # unknown words become [UNK]: special too
        out = tmp_path / shown.replace(" ", "_")
        with pytest.raises(SystemExit) as exc:
            explain_text.main([str(lms["good"]), "--text", text, "--output-dir", str(out)])
        assert isinstance(exc.value.code, str)           # exit status 1, the line on stderr
        assert exc.value.code == (
            f"error: the text becomes special tokens only ({shown}), so there is nothing of "
            "it to explain; give a text with at least one word of the model's vocabulary")
        assert not out.exists() or not any(out.iterdir())


def test_nan_weights_give_one_line(lms, tmp_path):
    proc = _cli(lms["nan"], TEXT, tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    # the loaders' weights check or, without it, this driver's catch of the engine's error
    assert line.startswith("error: ") and "model.layers.0.mlp.up_proj.weight" in line
    assert "NaN" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_finite_result_of_finite_weights_gives_one_line(lms, tmp_path):
    with pytest.raises(SystemExit) as exc:
        explain_text.main([str(lms["overflow"]), "--text", TEXT, "--output-dir", str(tmp_path)])
    assert exc.value.code == ("error: the explanation is not finite (NaN or inf): the model "
                              "overflows on this text in float32; run with --fp32 (or check the "
                              "weights for huge values)")
    assert not any(tmp_path.iterdir())


def test_nan_weights_past_the_loader_are_caught_by_the_driver(lms, tmp_path, monkeypatch):
    """Weights that turn NaN after loading (no loader check sees them): the engine's
    FloatingPointError becomes one line naming the parameter."""
    load = explain_text.load_checkpoint

    def corrupted(*args, **kwargs):
        model, tokenizer, kind = load(*args, **kwargs)
        with torch.no_grad():
            model.model.norm.weight[0] = float("nan")
        return model, tokenizer, kind

    monkeypatch.setattr(explain_text, "load_checkpoint", corrupted)
    with pytest.raises(SystemExit) as exc:
        explain_text.main([str(lms["good"]), "--text", TEXT, "--output-dir", str(tmp_path)])
    assert exc.value.code == (
        "error: the model's weights are not finite (parameter model.norm.weight holds NaN or "
        "inf), so its explanation is NaN; use a checkpoint with finite weights (e.g. retrain a "
        "diverged fine-tune)")
    assert not any(tmp_path.iterdir())
