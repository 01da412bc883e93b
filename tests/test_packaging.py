"""What a user installs and imports: every third-party import is declared (pyproject.toml's
[project].dependencies; requirements-test.txt for the tests); every package folder is listed in
pyproject.toml; the wheel holds one top-level package, ``palrp``, with the embedded assets;
installed on its own, the Python API and the embedded default work from another folder without
writing into the install; the drivers' ``--help`` runs from the checkout root and from NLP/."""
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

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "results", "__pycache__", ".venv", "venv", "build", "shared"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Scripts that run in an environment of their own, never the project's, and what they import
#: there (LXT needs transformers 4.x: scripts/make_lxt_reference.py's docstring).
OWN_ENVIRONMENT = {"scripts/make_lxt_reference.py": {"lxt"}}


def _names(requirements) -> set[str]:
    """Distribution names (normalised) of requirement strings; options and comments skipped."""
    names = set()
    for line in requirements:
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
    local |= {p.stem for p in (ROOT / "benchmarks").glob("*.py")}   # scripts import siblings
    local |= {p.name for p in (ROOT / "benchmarks").iterdir() if (p / "__init__.py").is_file()}
    runtime = _names(PYPROJECT["project"]["dependencies"])
    test_only = _names((ROOT / "requirements-test.txt").read_text().splitlines())
    distributions = md.packages_distributions()
    missing = []
    for path in _python_files():
        in_tests = path.relative_to(ROOT).parts[0] == "tests"
        allowed = runtime | test_only if in_tests else runtime
        own = OWN_ENVIRONMENT.get(path.relative_to(ROOT).as_posix(), set())
        for name in _imports(path) - set(sys.stdlib_module_names) - local - {"__future__"} - own:
            dists = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if not dists & allowed:
                missing.append(f"{path.relative_to(ROOT)} imports {name} ({', '.join(sorted(dists))})")
    assert not missing, "undeclared third-party imports: " + "; ".join(sorted(missing))


def test_requirements_txt_installs_the_project_and_declares_nothing_else():
    """The dependencies are declared once, in pyproject.toml; requirements.txt is ``-e .``."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line] == ["-e ."]


def _package_folders() -> dict[str, Path]:
    """Dotted name -> folder of every folder holding an ``__init__.py`` under the folders that
    pyproject.toml's package-dir maps into ``palrp``."""
    found = {}
    for name, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" not in rel.parts:
                found[".".join((name, *rel.parts))] = init.parent
    return found


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = _package_folders()
    assert {"palrp", "palrp.modules", "palrp.baselines"} <= found.keys()
    assert not found.keys() - listed, (
        f"package folders missing from pyproject.toml's [tool.setuptools] packages (the wheel "
        f"would not hold them): {sorted(found.keys() - listed)}")
    assert not listed - found.keys(), f"listed but no such package folder: {sorted(listed - found.keys())}"


API_SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import timm, torch
    import palrp, palrp.modules, palrp.baselines
    from palrp import config, explain, load_deit, load_text_model, vision_model
    from palrp.data import demo_vision

    site, work = Path(sys.argv[1]).resolve(), Path.cwd().resolve()
    for module in (palrp, palrp.modules, palrp.baselines, config):
        assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
    # paths: the working directory, the cache from the environment, the assets in the package
    assert config.OUTPUT_DIR == work / "results" and config.CHECKPOINT_DIR == work / "checkpoints"
    assert config.CACHE_DIR == Path(os.environ["PALRP_CACHE_DIR"])
    assert config.ASSETS_DIR == site / "palrp" / "assets", config.ASSETS_DIR
    assert (config.DEMO_TEXT_DIR / "lm" / "config.json").is_file()

    # the embedded DeiT, from the install; the demo data written into the cache
    demo = load_deit(demo_vision.demo_model_path())
    result = explain(demo, vision_model.normalize(demo, torch.rand(1, 3, 64, 64)))
    assert result.combined().shape == (1, 64, 64)
    demo_vision.DEMO_SEG_IMAGES = 2
    assert demo_vision.ensure_demo_seg().parent == config.CACHE_DIR / "demo_data"

    # a tiny timm ViT, saved and loaded as a checkpoint
    torch.manual_seed(0)
    vit = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, embed_dim=24, depth=1, num_heads=3, num_classes=4)
    torch.save({"model": vit.state_dict()}, "tiny.pth")
    model = load_deit("tiny.pth", num_heads=3)
    result = explain(model, vision_model.normalize(model, torch.rand(2, 3, 32, 32)))
    assert result.combined().shape == (2, 32, 32) and result.target.shape == (2,)

    # the embedded LM (a transformers folder inside the package)
    lm = load_text_model(config.DEMO_TEXT_DIR / "lm")
    enc = lm.tokenizer(["the movie was good"], return_tensors="pt")
    result = explain(lm.model, {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask})
    assert result.combined().shape == enc.input_ids.shape
    print("API OK", palrp.__file__)
''')


def _pip(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_installs_one_package_and_the_api_runs_from_another_folder(tmp_path):
    """``pip install`` of the project puts only ``palrp`` into site-packages (with palrp.modules,
    palrp.baselines, palrp.config and the assets); installed alone into a folder, the API and the
    embedded default run from a folder that is not the checkout with nothing but that install
    (and the dependencies) on the path, and write nothing into the install."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools "
                                             "(requirements-test.txt)")
    wheels, site, work, src = (tmp_path / n for n in ("wheels", "site", "work", "src"))
    work.mkdir()
    # setuptools builds in the source folder (build/, *.egg-info): build from a copy of what the
    # sdist would hold, not from the checkout. palrp/config.py stays a link to ../config.py.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in set(PYPROJECT["tool"]["setuptools"]["package-dir"].values()):
        shutil.copytree(ROOT / folder, src / folder, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "config.py"):
        shutil.copy(ROOT / name, src / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src), cwd=tmp_path)
    (wheel,) = wheels.glob("pa_lrp-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert archive.read("palrp/config.py") == (ROOT / "config.py").read_bytes()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"palrp"}
    packages = {name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    assert packages == set(_package_folders())
    assets = {name.removeprefix("palrp/assets/") for name in names if name.startswith("palrp/assets/")}
    assert assets == _files(ROOT / "palrp" / "assets")
    assert "vision/deit_demo.safetensors" in assets

    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel), cwd=tmp_path)
    installed = _files(site)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("PALRP_")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PALRP_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", API_SCRIPT, str(site)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"API OK {site / 'palrp' / '__init__.py'}" in proc.stdout
    assert _files(site) == installed, "the installed package was written to"


@pytest.mark.parametrize("cwd, script", [(".", "NLP/main_imdb.py"), ("NLP", "main_imdb.py")],
                         ids=["from-root", "from-NLP"])
def test_nlp_driver_help_runs_from_the_root_and_from_its_folder(cwd, script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, script, "--help"], cwd=ROOT / cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "--model-size" in proc.stdout
