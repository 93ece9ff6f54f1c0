"""The repository explains itself: nothing points outside it, and every link into
`docs/` lands on a heading or an anchor that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"(docs/[\w.-]+\.md)(?:#([\w-]+))?")
_RELATIVE_LINK = re.compile(r"\]\(([\w.-]+\.md)(?:#([\w-]+))?\)")
_OUTSIDE = re.compile(r"\.\./shared|\bCONTRACT \d|\bPITFALLS \d|shared/CONTRACT|shared/PITFALLS")


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.stdout.splitlines()]
    return [f for f in files if f.suffix not in {".png", ".jpg"} and f.is_file()]


def _anchors(doc: Path) -> set[str]:
    text = doc.read_text()
    found = set(re.findall(r'<a id="([\w-]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_nothing_points_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _tracked_text_files()
        if path.name != "test_docs.py"
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offenders == []


def test_every_link_into_docs_resolves():
    broken = []
    for path in _tracked_text_files():
        for doc_name, anchor in _LINK.findall(path.read_text(errors="replace")):
            doc = ROOT / doc_name
            if not doc.is_file():
                broken.append(f"{path.relative_to(ROOT)} -> {doc_name}")
            elif anchor and anchor not in _anchors(doc):
                broken.append(f"{path.relative_to(ROOT)} -> {doc_name}#{anchor}")
        for doc_name, anchor in _RELATIVE_LINK.findall(path.read_text(errors="replace")):
            doc = path.parent / doc_name
            if not doc.is_file() or (anchor and anchor not in _anchors(doc)):
                broken.append(f"{path.relative_to(ROOT)} -> {doc_name}#{anchor}")
    assert broken == []
