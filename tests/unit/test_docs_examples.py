"""Every example has a README and an integration test, and the docs list it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir() and p.name[0] not in "._")
TESTS = "\n".join(p.read_text() for p in (ROOT / "tests" / "integration").glob("test_*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4, EXAMPLES


def test_every_example_has_a_readme_a_test_and_a_docs_entry() -> None:
    page = (ROOT / "docs" / "src" / "examples.md").read_text()
    for example in EXAMPLES:
        assert (example / "README.md").is_file(), f"{example.name} has no README.md"
        assert f'"{example.name}"' in TESTS, f"no integration test runs examples/{example.name}"
        assert f"`examples/{example.name}/`" in page, f"docs/src/examples.md lacks {example.name}"
