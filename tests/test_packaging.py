"""What a user installs and imports: every third-party import is declared in requirements; the
wheel holds one top-level package, ``palrp``; installed on its own, the README's Python API works
from another folder."""
import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "results", "__pycache__", ".venv", "venv", "build", "shared"}


def _declared(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[; ]", line)[0].lower().replace("_", "-"))
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _python_files():
    for path in ROOT.rglob("*.py"):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def test_every_third_party_import_is_declared():
    local = {p.stem for p in ROOT.glob("*.py")} | {p.name for p in ROOT.iterdir() if p.is_dir()}
    local |= {p.stem for p in (ROOT / "tests").glob("*.py")}
    runtime = _declared(ROOT / "requirements.txt")
    test_only = _declared(ROOT / "requirements-test.txt")
    distributions = md.packages_distributions()
    missing = []
    for path in _python_files():
        in_tests = path.relative_to(ROOT).parts[0] == "tests"
        allowed = runtime | test_only if in_tests else runtime
        for name in _imports(path) - set(sys.stdlib_module_names) - local - {"__future__"}:
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if not dists & allowed:
                missing.append(f"{path.relative_to(ROOT)} imports {name} ({', '.join(sorted(dists))})")
    assert not missing, "undeclared third-party imports: " + "; ".join(sorted(missing))


API_SCRIPT = textwrap.dedent('''
    import timm, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from palrp import explain_image, explain_text, load_deit, vision_model

    torch.manual_seed(0)
    vit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, embed_dim=24, depth=1, num_heads=3, num_classes=4)
    torch.save({"model": vit.state_dict()}, "tiny.pth")
    model = load_deit("tiny.pth", num_heads=3)
    images = vision_model.normalize(model, torch.rand(2, 3, 32, 32))
    result = explain_image(model, images, method="pa_lrp")
    assert result.map.shape == (2, 32, 32)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=32))
    text = explain_text(lm, torch.randint(0, 50, (1, 7)), pe=True)
    assert text.combined().shape == (1, 7)
    import palrp
    print("API OK", palrp.__file__)
''')


def _pip(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_wheel_installs_one_package_and_the_api_runs_from_another_folder(tmp_path):
    """``pip install`` of the project puts only ``palrp`` into site-packages (no ``data``,
    ``config``, ``runtime``, ...), and the API runs from a folder that is not the checkout with
    nothing but that install on the path."""
    wheels, site, work, src = (tmp_path / n for n in ("wheels", "site", "work", "src"))
    work.mkdir()
    # setuptools builds in the source folder (build/, *.egg-info): build from a copy of what the
    # sdist would hold, not from the checkout.
    shutil.copytree(ROOT / "palrp", src / "palrp", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src), cwd=tmp_path)
    (wheel,) = wheels.glob("pa_lrp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"palrp"}
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel), cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", API_SCRIPT], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"API OK {site / 'palrp' / '__init__.py'}" in proc.stdout
