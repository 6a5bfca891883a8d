"""The documentation builds as a site (`mkdocs build --strict`: a broken link or anchor, or a page
left out of the navigation, fails it), and the relative links of the Markdown files outside docs/
(README.md, CHANGELOG.md), which MkDocs does not see, lead to files and headings that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.services import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")
# Markdown files the site does not contain, whose links are checked here.
OUTSIDE_PAGES = ("README.md", "CHANGELOG.md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def slug(heading: str) -> str:
    """The id MkDocs (and GitHub) give a heading."""
    text = re.sub(r"[`*]", "", heading)
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text.lower()).strip())


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(match) for match in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE)}


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or heading in a Markdown file, does not exist."""
    found: list[str] = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            found.append(f"{page.name}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            found.append(f"{page.name}: {target}: no heading #{anchor} in {resolved.name}")
    return found


def test_the_site_builds_in_strict_mode(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "approval.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = build(copy / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert [name for name in pages if f": {name}" not in nav] == []


@pytest.mark.parametrize("name", OUTSIDE_PAGES)
def test_the_links_of_pages_outside_the_site_lead_somewhere(name):
    assert broken_links(ROOT / name) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## The `make airflow` section\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md#the-make-airflow-section) [gone](docs/gone.md) [bad](docs/page.md#nothing)\n"
        "```\n[in a code block](docs/ignored.md)\n```\n"
    )
    assert broken_links(readme) == [
        "README.md: docs/gone.md: no such file",
        "README.md: docs/page.md#nothing: no heading #nothing in page.md",
    ]


def test_the_connections_page_names_every_field_the_package_registers():
    """docs/connections.md is hand-written: a connection type, extra field or UI label added to the
    provider's metadata must be documented there too."""
    from azureml_retrain.provider_info import get_provider_info

    page = (ROOT / "docs" / "connections.md").read_text()
    missing: list[str] = []
    for kind in get_provider_info()["connection-types"]:
        conn_type = kind["connection-type"]
        section = page.partition(f"**`{conn_type}`**")[2].partition("\n**`")[0]
        if not section:
            missing.append(f"{conn_type}: no section starting with **`{conn_type}`**")
            continue
        labels = kind.get("ui-field-behaviour", {}).get("relabeling", {}).values()
        extras = kind.get("conn-fields", {})
        missing += [f"{conn_type}: label {label!r}" for label in labels if label not in section]
        # An extra field by its name in the type's section, and its UI label somewhere on the page.
        missing += [f"{conn_type}: extra {name!r}" for name in extras if f"`{name}`" not in section]
        missing += [f"{conn_type}: label {field['label']!r}" for field in extras.values() if field["label"] not in page]
    assert missing == []
