"""docs/paper.md: every section the package cites exists.

Docstrings, captions and claims cite the paper notes as ``docs/paper.md §A.6``
(ranges and lists such as ``§A.4-§A.5`` or ``§A.3, §D.4`` included); each
label must be a section heading of docs/paper.md.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "paper.md"

# A citation, then any further labels joined to it by "-", "/" or ", ".
_CITATION = re.compile(r"(?:PAPER_NOTES|docs/paper\.md)\s+§?([A-G](?:\.\d+)?(?:(?:\s*[-/]\s*|,\s+)§?[A-G]\.\d+)*)")
_LABEL = re.compile(r"[A-G](?:\.\d+)?")


def _sections() -> set[str]:
    labels = set()
    for line in DOC.read_text().splitlines():
        m = re.match(r"#{2,3} ([A-G])(?:\.(\d+))?[ .]", line)
        if m:
            labels.add(m.group(1) + (f".{m.group(2)}" if m.group(2) else ""))
    return labels


def _cited() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for path in sorted((ROOT / "modeseek").rglob("*.py")):
        text = path.read_text()
        for m in _CITATION.finditer(text):
            for label in _LABEL.findall(m.group(1)):
                cited.setdefault(label, set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_cited_section_exists():
    sections = _sections()
    assert {"A", "B", "C", "D", "E", "G", "A.6", "G.11"} <= sections
    cited = _cited()
    assert cited, "no citations found"
    missing = {label: sorted(files) for label, files in cited.items() if label not in sections}
    assert not missing, f"cited but not in docs/paper.md: {missing}"
