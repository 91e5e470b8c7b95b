"""book/reproduce.md lists every option of `python -m casekit.book` (from the driver's argparse parser)."""

import re
from pathlib import Path

from casekit import book

PAGE = Path(__file__).resolve().parents[1] / "book" / "reproduce.md"


def test_reproduce_page_lists_every_option_of_the_driver():
    rows = [line for line in PAGE.read_text().splitlines() if line.startswith("| `")]
    listed = {m for line in rows for m in re.findall(r"`(-{1,2}[a-z][a-z-]*)", line.split("|")[1])}
    options = {s for a in book._parser()._actions for s in a.option_strings}
    assert options and options <= listed, f"missing from book/reproduce.md: {sorted(options - listed)}"
    assert listed <= options, f"book/reproduce.md names unknown options: {sorted(listed - options)}"
