"""The documentation: the site builds without a broken link or a missing page, and the
repository's files speak of the product, never of documents outside it or of how it was
built."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

# Words that only text about the project's own development uses: a design document
# kept outside the repository, numbered stretches of work, tracker numbers.
NARRATION = re.compile(
    r"\bDES" + r"IGN\b"
    r"|\b[Ss]ess" + r"ion [0-9]"
    r"|\b[Ii]ss" + r"ues? #?[0-9]"
    r"|\(iss" + r"ue\b"
    r"|\bwork per" + r"iods?\b"
)
# Rewritten on their own; checked again once that lands.


def _tracked() -> list[str]:
    r = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        pytest.skip("not a git checkout: no list of tracked files")
    return [p for p in r.stdout.split("\0") if p]


def test_the_site_builds_strictly(tmp_path: Path):
    """``mkdocs build --strict``: a broken link, a missing anchor or a page missing from
    the navigation fails the build."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (site / "index.html").is_file()
    assert (site / "CONFIG" / "index.html").is_file()


def test_every_page_under_docs_is_in_the_navigation():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, str):
            listed.add(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(nav)
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - listed == set(), "pages not in mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


def test_the_readme_links_into_the_docs():
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/CONFIG.md", "docs/CONTRACT.md", "docs/ARCHITECTURE.md"):
        assert f"]({page}" in readme, page
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target


def test_ci_runs_the_readme_test_command():
    """.ci/run ends in the very command the README gives for the whole suite."""
    blocks = re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    command = blocks[1]
    assert "pytest" in command
    assert (ROOT / ".ci" / "run").read_text().rstrip("\n").splitlines()[-1] == command


def test_no_file_narrates_the_development_or_cites_an_outside_document():
    found = []
    for name in _tracked():
        if name.endswith((".png", ".min.js")):
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if NARRATION.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert found == [], "\n".join(found)
