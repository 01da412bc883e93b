"""Issue 22, models and checkpoints: no silently wrong result, no traceback.

Every case builds its tiny model from a config, writes (and damages) its files here, and asserts
the exit status (drivers), the one-line message naming the problem and the fix, and that nothing
was written. Cases: non-finite weights in every loader and driver; damaged safetensors / JSON /
.pth files; a DeiT .pth without its config (the head count is read from the weights only where
they determine it, never guessed); a classifier given where a language model is needed; a
tokenizer with more ids than the model's embedding. A fuzz test feeds random bytes and
truncations of each accepted file kind to its reader."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import make_timm_vit
from palrp.loaders import hub
from palrp.loaders.checkpoints import (CheckpointError, load_deit, load_timm_model,
                                       read_checkpoint)
from palrp.loaders.health import check_finite_parameters
from palrp.loaders.text_models import ModelFolderError, check_model_folder, load_text_model
from palrp.runtime.vision_run import load_model_or_exit

ROOT = Path(__file__).resolve().parents[1]
GEOMETRY = dict(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=5)
BAD = "blocks.1.attn.qkv.weight"


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


def _run(script, *args, timeout=300):
    """``script`` in a subprocess: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _sidecar(path: Path, **config) -> Path:
    path.with_suffix(".json").write_text(json.dumps({"config": config}))
    return path


def _nan_state(value=float("nan"), index=(0, 0)):
    state = make_timm_vit(**GEOMETRY).state_dict()
    state = {k: v.clone() for k, v in state.items()}
    state[BAD][index] = value
    return state


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8")).save(path)
    return path


# --- 1. model health ------------------------------------------------------------------------------

def test_health_helper_names_the_first_bad_parameter():
    model = make_timm_vit(**GEOMETRY)
    check_finite_parameters(model, "m")                    # finite: nothing raised
    with torch.no_grad():
        model.blocks[0].mlp.fc2.bias[:3] = float("inf")
        model.blocks[1].attn.qkv.weight[0, 0] = float("nan")
    with pytest.raises(ValueError) as info:
        check_finite_parameters(model, "m.pth")
    assert _one_line(str(info.value)) == (
        "m.pth has non-finite weights: parameter blocks.0.mlp.fc2.bias holds 3 NaN/inf value(s) "
        "of 24; the model is broken (e.g. a diverged training): pass a checkpoint with finite "
        "weights")


def test_nan_deit_refused_by_load_deit_and_hub(tmp_path):
    path = tmp_path / "nan.pth"
    torch.save({"model": _nan_state()}, path)
    for load in (lambda: load_deit(path, num_heads=3), lambda: hub.load_model(path, num_heads=3)):
        with pytest.raises(CheckpointError) as info:
            load()
        assert _one_line(str(info.value)).startswith(
            f"{path} has non-finite weights: parameter {BAD} holds 1 NaN/inf value(s) of 1728;")


def test_inf_timm_weights_refused_by_load_timm_model(tmp_path):
    path = tmp_path / "inf.safetensors"
    save_file({k: v.contiguous() for k, v in _nan_state(float("-inf"), (2, 3)).items()}, path)
    with pytest.raises(CheckpointError, match=f"parameter {BAD} holds 1 NaN/inf value"):
        load_timm_model("deit_tiny_patch16_224", path, **{k: v for k, v in GEOMETRY.items()
                                                           if k != "num_classes"})


def test_nan_vision_model_driver_exits_with_one_line(tmp_path, image):
    path = _sidecar(tmp_path / "nan.pth", num_heads=3)
    torch.save({"model": _nan_state()}, path)
    out = tmp_path / "out"
    status, stdout, stderr = _run("explain_image.py", "--model", path, "--image", image,
                                  "--device", "cpu", "--output-dir", out)
    assert status == 1 and stdout == ""
    assert _one_line(stderr).startswith(f"error: {path} has non-finite weights: parameter {BAD}")
    assert not out.exists() or not any(out.iterdir())
    # the benchmark drivers load through the same helper
    with pytest.raises(SystemExit) as info:
        load_model_or_exit(path, {}, torch.device("cpu"))
    assert f"parameter {BAD} holds 1 NaN/inf" in _one_line(str(info.value))


def _llama_folder(path: Path, *, tie=False, classifier=False, vocab_delta=0, nan=None,
                  words=("[PAD]", "[UNK]", "<s>", "</s>", "the", "movie", "was", "good", "bad")):
    """A tiny Llama (causal LM or 2-label classifier) and a word-level tokenizer in ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                              PreTrainedTokenizerFast)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                  bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words) + vocab_delta, hidden_size=16, intermediate_size=24,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=tie,
                      num_labels=2)
    model = (LlamaForSequenceClassification if classifier else LlamaForCausalLM)(cfg)
    if nan is not None:
        with torch.no_grad():
            dict(model.named_parameters())[nan].view(-1)[:2] = float("nan")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


NAN_TEXT = "model.layers.0.self_attn.o_proj.weight"


def test_nan_text_model_refused_at_load(tmp_path):
    folder = _llama_folder(tmp_path / "lm", nan=NAN_TEXT)
    with pytest.raises(ModelFolderError) as info:
        load_text_model(folder, device="cpu")
    assert _one_line(str(info.value)).startswith(
        f"{folder} has non-finite weights: parameter {NAN_TEXT} holds 2 NaN/inf value(s) of 256;")


def test_nan_text_model_explain_text_exits_with_one_line(tmp_path):
    folder = _llama_folder(tmp_path / "lm", nan=NAN_TEXT)
    out = tmp_path / "out"
    status, stdout, stderr = _run("explain_text.py", folder, "--text", "the movie was good",
                                  "--device", "cpu", "--output-dir", out)
    assert status == 1 and "FloatingPointError" not in stderr
    assert _one_line(stderr).startswith(f"error: {folder} has non-finite weights: parameter "
                                        f"{NAN_TEXT}")
    assert not out.exists() or not any(out.iterdir())


def _pert_error(task, tmp_path, *args) -> str:
    from palrp.runtime.cli import perturbation_main
    out = tmp_path / "pert"
    with pytest.raises(SystemExit) as info:
        perturbation_main(task, ["--mode", "pert", "--device", "cpu", "--output-dir", str(out),
                                 "--max-samples", "2", "--max-length", "32", *map(str, args)])
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    message = _one_line(str(info.value))
    assert message.startswith("error: ")
    return message


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    path = tmp_path_factory.mktemp("wiki") / "wiki.jsonl"
    path.write_text(json.dumps({"title": "t", "text": "the movie was good the movie was bad"})
                    + "\n")
    return path


def test_nan_text_model_perturbation_driver_exits_with_one_line(tmp_path, wiki):
    from NLP import eval_pert_wiki
    folder = _llama_folder(tmp_path / "lm", nan=NAN_TEXT)
    message = _pert_error(eval_pert_wiki.TASK, tmp_path, "--model-path", folder,
                          "--data-path", wiki)
    assert f"parameter {NAN_TEXT} holds 2 NaN/inf" in message


# --- 2. damaged files --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vision_files(tmp_path_factory):
    """A tiny DeiT as .safetensors (config in the metadata) and as .pth with a sidecar JSON."""
    root = tmp_path_factory.mktemp("vision_files")
    state = make_timm_vit(**GEOMETRY).state_dict()
    safet = root / "deit.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, safet,
              metadata={"config": json.dumps({"num_heads": 3, "class_names": list("abcde")})})
    pth = _sidecar(root / "deit.pth", num_heads=3)
    torch.save({"model": state}, pth)
    return {"state": state, "safetensors": safet, "pth": pth}


def _damaged_copy(src: Path, dst: Path, data: bytes) -> Path:
    dst.write_bytes(data)
    sidecar = src.with_suffix(".json")
    if sidecar.exists():
        dst.with_suffix(".json").write_bytes(sidecar.read_bytes())
    return dst


def test_truncated_safetensors_one_line(vision_files, tmp_path):
    data = vision_files["safetensors"].read_bytes()
    path = _damaged_copy(vision_files["safetensors"], tmp_path / "cut.safetensors",
                         data[:len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_deit(path)
    assert _one_line(str(info.value)).startswith(f"cannot read {path} as safetensors (")
    assert str(info.value).endswith("pass an intact checkpoint")


def test_bad_safetensors_header_one_line(vision_files, tmp_path):
    data = bytearray(vision_files["safetensors"].read_bytes())
    data[8:20] = b"#" * 12                                  # the JSON header, broken
    path = _damaged_copy(vision_files["safetensors"], tmp_path / "header.safetensors", bytes(data))
    with pytest.raises(CheckpointError, match=f"^cannot read {path} as safetensors"):
        load_deit(path)


def test_bad_safetensors_config_metadata_one_line(vision_files, tmp_path):
    path = tmp_path / "meta.safetensors"
    save_file({k: v.contiguous() for k, v in vision_files["state"].items()}, path,
              metadata={"config": '{"num_heads": 3,'})
    with pytest.raises(CheckpointError) as info:
        load_deit(path)
    assert _one_line(str(info.value)) == (
        f'the "config" metadata of {path} is not valid JSON (line 1, column 17: Expecting '
        'property name enclosed in double quotes); save the weights again with their config')
    save_file({k: v.contiguous() for k, v in vision_files["state"].items()}, path,
              metadata={"config": "[3]"})
    with pytest.raises(CheckpointError, match="holds a JSON list, not an object of settings"):
        load_deit(path)


def test_corrupt_sidecar_config_json_one_line(vision_files, tmp_path):
    path = tmp_path / "deit.pth"
    path.write_bytes(vision_files["pth"].read_bytes())
    sidecar = tmp_path / "deit.json"
    sidecar.write_text('{"config": {"num_heads": 3')
    with pytest.raises(CheckpointError) as info:
        load_deit(path)
    assert _one_line(str(info.value)) == (
        f"the config file {sidecar} is not valid JSON (line 1, column 27: Expecting ',' "
        "delimiter); restore it or remove it")
    sidecar.write_text('{"config": [1, 2]}')
    with pytest.raises(CheckpointError, match='has a "config" that is no JSON object'):
        load_deit(path)
    sidecar.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CheckpointError, match=f"cannot read the config file {sidecar}"):
        load_deit(path)


def test_demo_style_config_json_corrupt(tmp_path):
    """A palrp/assets/vision/deit_demo.json-style sidecar (settings at the top level beside
    the safetensors) that is damaged."""
    from palrp.data.demo_vision import demo_model_path
    src = demo_model_path()
    path = tmp_path / "deit_demo.safetensors"
    from safetensors.torch import load_file
    save_file(load_file(str(src)), path)                   # the weights without metadata
    (tmp_path / "deit_demo.json").write_text(src.with_suffix(".json").read_text()[:50])
    with pytest.raises(CheckpointError, match=r"^the config file .*deit_demo.json is not valid "
                                              r"JSON \(line \d+, column \d+: .*\); restore it"):
        load_deit(path)


@pytest.mark.parametrize("content, fragment", [
    (b"not a checkpoint at all", "as a PyTorch checkpoint"),
    ("list", "holds a list, not a state dict"),
    ("empty", "holds no tensors, so it is no model checkpoint"),
    ("ints", "holds 'epoch', which is no named tensor, so it is no model checkpoint"),
])
def test_pth_that_is_not_a_checkpoint(tmp_path, content, fragment):
    path = tmp_path / "x.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save({"list": [torch.zeros(2)], "empty": {}, "ints": {"epoch": 3}}[content], path)
    with pytest.raises(CheckpointError) as info:
        load_deit(path, num_heads=3)
    message = _one_line(str(info.value))
    assert str(path) in message and fragment in message


def test_damaged_file_driver_exits_with_one_line(vision_files, tmp_path, image):
    data = vision_files["safetensors"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:-100])
    out = tmp_path / "out"
    message = _explain_image_error("--model", path, "--image", image, "--output-dir", out)
    assert message.startswith(f"error: cannot read {path} as safetensors")
    assert not out.exists() or not any(out.iterdir())


def _explain_image_error(*args) -> str:
    import explain_image
    with pytest.raises(SystemExit) as info:
        explain_image.main(["--device", "cpu", *map(str, args)])
    return _one_line(str(info.value))


def test_text_folder_with_truncated_weights_or_corrupt_config(tmp_path):
    folder = _llama_folder(tmp_path / "lm")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(ModelFolderError, match=f"^cannot read the weights in {folder} .*save the "
                                               "model again$"):
        load_text_model(folder, device="cpu")
    (folder / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelFolderError) as info:
        load_text_model(folder, device="cpu")
    assert _one_line(str(info.value)).startswith(f"{folder / 'config.json'} is not valid JSON")


# --- 3. a DeiT .pth without its config: heads only from the weights, never guessed ------------------

def _four_head_deit(**extra):
    return make_timm_vit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                         num_classes=5) if not extra else _timm_vit(**extra)


def _timm_vit(**kwargs):
    import timm
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False, **kwargs).eval()


def test_pth_without_config_asks_for_the_head_count(tmp_path, image):
    reference = _four_head_deit()
    path = tmp_path / "tiny.pth"
    torch.save({"model": reference.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_deit(path)
    assert _one_line(str(info.value)) == (
        f"{path} does not record its number of attention heads (its weights of width 32 fit "
        "any head count that divides it); pass --num-heads N (num_heads=N), --model-size "
        "tiny|small|base for official DeiT weights, or a config with \"num_heads\" (safetensors "
        "metadata or a sibling .json {\"config\": {...}})")
    out = tmp_path / "out"
    assert "pass --num-heads N" in _explain_image_error("--model", path, "--image", image,
                                                        "--output-dir", out)
    assert not out.exists() or not any(out.iterdir())
    # with the flag: the model it was, and an explanation
    model = load_deit(path, num_heads=4)
    assert model.blocks[0].attn.num_heads == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    import explain_image
    assert explain_image.main(["--model", str(path), "--num-heads", "4", "--image", str(image),
                               "--device", "cpu", "--output-dir", str(out)]) == 0
    assert (out / "photo_explanation.png").is_file()


def test_num_heads_flag_is_checked():
    from palrp.runtime.cli import Parser, add_model_args
    parser = Parser()
    add_model_args(parser, "demo")
    assert parser.parse_args(["--num-heads", "4"]).num_heads == 4
    for bad in ("0", "-2", "four"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--num-heads", bad])


def test_heads_read_from_qk_norm_weights(tmp_path):
    """q/k norm weights have head_dim entries: the weights fix the head count."""
    reference = _timm_vit(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                          num_classes=5, qk_norm=True)
    path = tmp_path / "qknorm.pth"
    torch.save(reference.state_dict(), path)
    model = load_deit(path)
    assert model.blocks[0].attn.num_heads == 4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError) as info:
        load_deit(path, num_heads=2)
    assert _one_line(str(info.value)) == (
        f"{path} has 4 attention heads (head width 8 of 32) but 2 were given; pass "
        "--num-heads 4 or none")


def test_official_deit_file_name_gives_its_size(tmp_path):
    """An official DeiT file keeps working without flags: its name gives the size."""
    reference = _timm_vit(img_size=32, patch_size=16, embed_dim=192, depth=1, num_heads=3,
                          num_classes=4)
    path = tmp_path / "deit_tiny_patch16_224-a1311bcf.pth"
    torch.save({"model": reference.state_dict()}, path)
    assert load_deit(path).blocks[0].attn.num_heads == 3
    assert load_deit(path, model_size="tiny").blocks[0].attn.num_heads == 3
    renamed = tmp_path / "mine.pth"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="does not record its number of attention heads"):
        load_deit(renamed)
    # a name that says another size than the width: the name is not trusted
    wrong = tmp_path / "deit_small_patch16_224-cd65a155.pth"
    wrong.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="does not record its number of attention heads"):
        load_deit(wrong)


# --- 4. model kinds and vocabularies -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tied_classifier(tmp_path_factory):
    """A sequence classifier with tied embeddings: as a causal LM no weight would be missing."""
    return _llama_folder(tmp_path_factory.mktemp("clf") / "clf", tie=True, classifier=True)


def test_classifier_is_no_language_model(tied_classifier):
    with pytest.raises(ModelFolderError) as info:
        load_text_model(tied_classifier, "causal_lm", device="cpu")
    assert _one_line(str(info.value)) == (
        f"{tied_classifier} holds a sequence classifier (LlamaForSequenceClassification), not a "
        "language model; this needs a causal LM that predicts the next token: pass a "
        "*ForCausalLM folder (--model-path / --model-size)")


def test_classifier_as_arc_and_wiki_model_refused(tied_classifier, tmp_path, wiki):
    from NLP import eval_pert_arc, eval_pert_wiki
    from palrp.data import text_procedural as tp
    arc = tmp_path / "arc.jsonl"
    arc.write_text("".join(json.dumps(item) + "\n" for item in tp.arc_items(2, 0, True)))
    for task, data in ((eval_pert_arc.TASK, arc), (eval_pert_wiki.TASK, wiki)):
        message = _pert_error(task, tmp_path, "--model-path", tied_classifier, "--data-path", data)
        assert message == (f"error: {tied_classifier} holds a sequence classifier "
                           "(LlamaForSequenceClassification), not a language model; this needs "
                           "a causal LM that predicts the next token: pass a *ForCausalLM folder "
                           "(--model-path / --model-size)")


def test_causal_lm_as_classifier_refused(tmp_path):
    from NLP import eval_pert_imdb
    folder = _llama_folder(tmp_path / "lm", tie=True)
    message = _pert_error(eval_pert_imdb.TASK, tmp_path, "--model-path", folder)
    assert message.startswith(f"error: {folder} has no trained LlamaForSequenceClassification "
                              "head (weights not in the file: score.weight)")


def test_tokenizer_with_more_ids_than_the_model(tmp_path, wiki):
    from NLP import eval_pert_wiki
    folder = _llama_folder(tmp_path / "lm", vocab_delta=-3)
    with pytest.raises(ModelFolderError) as info:
        load_text_model(folder, device="cpu")
    assert _one_line(str(info.value)) == (
        f"the tokenizer in {folder} has 9 token ids but the model's embedding has 6 rows, so "
        "ids 6..8 have no embedding; pass the tokenizer saved with this model (or resize the "
        "embeddings and save the model again)")
    assert "has 9 token ids but the model's embedding has 6 rows" in _pert_error(
        eval_pert_wiki.TASK, tmp_path, "--model-path", folder, "--data-path", wiki)
    # a larger embedding than the tokenizer (padded vocabularies) is fine
    load_text_model(_llama_folder(tmp_path / "padded", vocab_delta=7), device="cpu")


# --- 5. fuzz: random bytes and truncations of each accepted file kind -------------------------------

def _mutations(data: bytes, rng: random.Random, count: int):
    """Truncations at random lengths (and a few fixed ones), random byte flips, and random
    files of random length."""
    for cut in [0, 1, 7, 8, 9, len(data) // 2, len(data) - 1] + [rng.randrange(len(data))
                                                                for _ in range(count)]:
        yield "cut", data[:cut]
    for _ in range(count):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(min(len(data), 400))        # header / pickle structure
            flipped[pos] = rng.randrange(256)
        yield "flip", bytes(flipped)
    for _ in range(count):
        yield "random", bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


def _reads_or_refuses(read, path: Path, data: bytes, error, check_result):
    path.write_bytes(data)
    try:
        result = read(path)
    except error as exc:
        _one_line(str(exc))
        return "refused"
    check_result(result)
    return "read"


def _same_state(expected):
    def check(result):
        state, _ = result
        assert set(state) == set(expected)
        for k, v in expected.items():
            assert state[k].shape == v.shape and torch.equal(state[k], v)
    return check


def test_fuzz_safetensors_and_pth_readers(vision_files, tmp_path):
    rng = random.Random(22)
    state = vision_files["state"]
    for kind in ("safetensors", "pth"):
        data = vision_files[kind].read_bytes()
        target = tmp_path / f"fuzz.{kind}"
        outcomes = []
        for how, mutated in _mutations(data, rng, 12):
            if how == "flip":       # a flipped byte may change values: only the kind of outcome
                check = lambda result: None             # noqa: E731
            else:
                check = _same_state(state)
            outcomes.append(_reads_or_refuses(read_checkpoint, target, mutated, CheckpointError,
                                              check))
            if how == "cut" and len(mutated) < len(data):
                assert outcomes[-1] == "refused", (kind, len(mutated))
        assert "refused" in outcomes
        # the whole loader too (geometry, strict load): refused or the intact model
        for how, mutated in list(_mutations(data, rng, 4)):
            def load(path):
                return load_deit(path, num_heads=3) if kind == "pth" else load_deit(path)
            _reads_or_refuses(load, target, mutated, CheckpointError, lambda model: None)


def test_fuzz_json_configs(vision_files, tmp_path):
    rng = random.Random(7)
    # the sidecar {"config": {...}} of a .pth
    sidecar_data = vision_files["pth"].with_suffix(".json").read_bytes()
    pth = tmp_path / "deit.pth"
    pth.write_bytes(vision_files["pth"].read_bytes())
    sidecar = tmp_path / "deit.json"
    for how, mutated in _mutations(sidecar_data, rng, 15):
        _reads_or_refuses(lambda _: read_checkpoint(pth), sidecar, mutated, CheckpointError,
                          lambda result: isinstance(result[1], dict))
    # a text model's config.json
    folder = _llama_folder(tmp_path / "lm")
    config = folder / "config.json"
    data = config.read_bytes()
    outcomes = [_reads_or_refuses(lambda _: check_model_folder(folder), config, mutated,
                                  ModelFolderError, lambda cfg: None)
                for _, mutated in _mutations(data, rng, 15)]
    assert "refused" in outcomes
    # and the full text loader on a few (transformers' own config reader behind it)
    for _, mutated in list(_mutations(data, rng, 3))[::3]:
        _reads_or_refuses(lambda _: load_text_model(folder, device="cpu"), config, mutated,
                          ModelFolderError, lambda loaded: None)
