"""Every number in a README result table comes from a result file that a committed script wrote.

The READMEs are the top-level one (a results summary) and ``benchmarks/README.md`` (the results in
detail). A result table is a table whose header names a measurement (a metric, a time, a speed, a memory peak).
The line after it must be ``Source: `benchmarks/results/...` `` (one or more files); every number in the
table's cells, the first (label) column aside, must occur in one of those files as written there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

READMES = (REPO / "README.md", REPO / "benchmarks" / "README.md")
MEASURED = re.compile(r"\b(pAP|pixel_AP|AUROC|AUPRO|DSC|F1|images/s|ms/image|s/image|RSS)\b|\(s\)", re.IGNORECASE)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")
SOURCE = re.compile(r"`(benchmarks/results/[^`]+)`")


def readme_tables(text: str) -> list[tuple[int, list[str], str]]:
    """``(line number, table lines, first non-empty line after the table)`` of every markdown table."""
    lines, tables, index = text.splitlines(), [], 0
    while index < len(lines):
        if lines[index].startswith("|"):
            start = index
            while index < len(lines) and lines[index].startswith("|"):
                index += 1
            after = next((line for line in lines[index:] if line.strip()), "")
            tables.append((start + 1, lines[start:index], after))
        index += 1
    return tables


def cells(row: str) -> list[str]:
    """The cells of a markdown table row."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def occurs(number: str, text: str) -> bool:
    """Whether ``number`` is written in ``text`` as a number of its own (not part of a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?![\d]|\.\d)", text) is not None


def result_tables(readme: Path) -> list[tuple[int, list[str], str]]:
    return [table for table in readme_tables(readme.read_text()) if MEASURED.search(table[1][0])]


@pytest.mark.parametrize(("readme", "at_least"), [(READMES[0], 3), (READMES[1], 6)], ids=["README", "benchmarks"])
def test_the_readmes_have_result_tables(readme: Path, at_least: int) -> None:
    assert len(result_tables(readme)) >= at_least


@pytest.mark.parametrize("readme", READMES, ids=["README", "benchmarks"])
def test_every_readme_result_table_cites_its_result_files(readme: Path) -> None:
    for line, _, after in result_tables(readme):
        assert after.startswith("Source:"), f"{readme.name} line {line}: a result table needs a 'Source:' line after it"
        paths = SOURCE.findall(after)
        assert paths, f"{readme.name} line {line}: the Source line names no benchmarks/results/ file"
        for path in paths:
            assert (REPO / path).is_file(), f"{readme.name} line {line}: {path} does not exist"


@pytest.mark.parametrize("readme", READMES, ids=["README", "benchmarks"])
def test_every_number_in_a_readme_result_table_occurs_in_its_source(readme: Path) -> None:
    missing = []
    for line, table, after in result_tables(readme):
        source = "\n".join((REPO / path).read_text() for path in SOURCE.findall(after) if (REPO / path).is_file())
        for offset, row in enumerate(table[2:], start=2):
            for cell in cells(row)[1:]:
                missing += [
                    f"line {line + offset}: {number}"
                    for number in NUMBER.findall(cell.replace("**", ""))
                    if not occurs(number, source)
                ]
    assert not missing, "README numbers with no source:\n" + "\n".join(missing)


def test_the_number_check_catches_a_number_that_is_not_in_the_source() -> None:
    assert occurs("21.62", "| UniAS | 21.62 | 9.16 |")
    assert not occurs("21.6", "| UniAS | 21.62 |")
    assert not occurs("1.62", "| UniAS | 21.62 |")
    assert not occurs("21.62", "| UniAS | 21.625 |")
