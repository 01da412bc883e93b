"""The docs that ship with the code: every doc the code cites exists, every section it cites is
there, and nothing refers to a file a user does not have (the specification the project was built from,
which is not shipped)."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The name of the unshipped specification, spelled so that this file does not match itself.
UNSHIPPED = "SP" + "EC"


def _tracked(*patterns):
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True)
    files = out.stdout.split() if out.returncode == 0 else []
    if not files:   # not a git checkout: every file below the root
        files = [str(p.relative_to(ROOT)) for pat in patterns for p in ROOT.rglob(pat)]
    return [ROOT / f for f in files if (ROOT / f).is_file()]


def _sections(doc: Path) -> set[int]:
    return {int(m) for m in re.findall(r"^## (\d+)\.", doc.read_text(encoding="utf-8"), re.M)}


def test_no_citation_of_a_file_users_do_not_have():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _tracked("*.py", "*.md")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if UNSHIPPED in line]
    assert not hits, "cite docs/method.md or docs/protocols.md instead: " + ", ".join(hits)


def test_cited_docs_and_sections_exist():
    cite = re.compile(r"docs/([a-z_]+\.md)(?:, sections? (\d+(?:(?:, | and |-)\d+)*))?")
    missing, found = [], 0
    for path in _tracked("*.py", "*.md"):
        for name, secs in cite.findall(path.read_text(encoding="utf-8")):
            found += 1
            doc = ROOT / "docs" / name
            if not doc.is_file():
                missing.append(f"{path.relative_to(ROOT)} cites docs/{name}")
                continue
            wanted = set()
            for part in re.split(r", | and ", secs) if secs else []:
                lo, _, hi = part.partition("-")
                wanted |= set(range(int(lo), int(hi or lo) + 1))
            if wanted - _sections(doc):
                missing.append(f"{path.relative_to(ROOT)} cites docs/{name} section(s) "
                               f"{sorted(wanted - _sections(doc))}")
    assert found > 50, f"only {found} citations of docs/ found: is the pattern still right?"
    assert not missing, "; ".join(sorted(set(missing)))


def test_cited_equations_exist():
    defined = set(re.findall(r"\(M(\d+)\)", (ROOT / "docs" / "method.md").read_text()))
    cited = set()
    for path in _tracked("*.py", "*.md"):
        cited |= set(re.findall(r"\bM(\d+)\b", " ".join(
            line for line in path.read_text(encoding="utf-8").splitlines() if "method.md" in line
            or "(M" in line)))
    assert {"1", "7", "12"} <= cited
    assert cited <= defined, f"cited but not defined in docs/method.md: M{sorted(cited - defined)}"


def test_the_readme_counts_the_registered_families():
    import palrp

    counts = re.findall(r"one registry of (\d+) model families", (ROOT / "README.md").read_text())
    assert counts == [str(len(palrp.families()))], "update the README's family count"


def test_every_family_has_a_row_in_the_family_tables():
    """docs/vision_families.md and docs/text_families.md name every registered family (its
    registry name, a model class, or a class stem as in ``LlamaFor{CausalLM,...}``)."""
    import palrp

    tables = "".join((ROOT / "docs" / name).read_text(encoding="utf-8")
                     for name in ("vision_families.md", "text_families.md"))
    missing = [f.name for f in palrp.families()
               if f.name not in tables and not any(
                   cls in tables or (cls.partition("For")[1] and cls.partition("For")[0] + "For"
                                     in tables) for cls in f.tasks)]
    assert not missing, f"families without a docs row: {missing}"
