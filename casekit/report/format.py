"""Readable tables for the notebooks and the book: result frames → HTML that fits a narrow column.

Every function returns a :class:`Block`: HTML for Jupyter, papermill outputs and the built book
(``_repr_html_``) and a plain-text form for everything else (``str()``, ``repr()``, the terminal).
Tables have no index column and no duplicate columns; each sits in its own horizontally scrolling box
(:func:`scroll`), so a wide table scrolls inside the page's column instead of widening it.

Number rules (one place for the whole book):

* percentages (agreements, shares): one decimal, ``"31.2%"``; a CI as ``"31.2% [25.0, 37.5]"``;
* p-values: three decimals without the leading zero, ``".023"``; below .001 → ``"< .001"``;
  a value that rounds to 1 → ``"1.000"``; missing → ``"–"`` (e.g. CASE against itself);
* verdicts: ``True`` → ✓, ``False`` → ✗, missing → —;
* other floats: ``digits`` decimals (3 by default); integers as they are.

Example (a notebook cell; import it as ``fmt``: the name ``format`` is a builtin)::

    from casekit.report import format as fmt

    full = ck.tables.table1_full(res, threshold=threshold, alpha=alpha)
    fmt.pivot(full)          # methods × models, "median [CI], p" cells, significant ones bold
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "settings",
    "SCROLL_CLASS",
    "TABLE_CLASS",
    "Block",
    "check",
    "claims_table",
    "collapsed",
    "fidelity_pivot",
    "fmt_ci",
    "fmt_num",
    "fmt_p",
    "fmt_pct",
    "p_phrase",
    "pivot",
    "scroll",
    "sensitivity_table",
    "stat_cell",
    "table",
]

#: Class of the scrolling box around every table (styled by ``book/_static/casekit.css``; the inline
#: style makes it scroll without that file too).
SCROLL_CLASS = "casekit-scroll"
#: Class of the tables themselves (deliberately not pandas' ``dataframe``, which the tests count).
TABLE_CLASS = "casekit-table"
CHECK = {True: "✓", False: "✗", None: "—"}
#: Cell lines up to this many characters never wrap (numbers, names); longer text (claims) wraps.
NOWRAP_CHARS = 32
_CELL = "padding:0.25em 0.6em;border-bottom:1px solid #ddd;vertical-align:top"


def _missing(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    try:
        return bool(isinstance(x, numbers.Real) and math.isnan(x))
    except TypeError:
        return False


# --------------------------------------------------------------------------- single values


def fmt_p(p: Any, digits: int = 3, missing: str = "–") -> str:
    """p-value text: ``.023``; ``< .001`` below ``10^-digits``; ``1.000`` when it rounds to 1."""
    if _missing(p):
        return missing
    p = float(p)
    if not -1e-12 <= p <= 1 + 1e-12:
        raise ValueError(f"a p-value must lie in [0, 1], got {p}")
    floor = 10.0 ** -digits
    if p < floor:
        return "< " + f"{floor:.{digits}f}".lstrip("0")
    text = f"{p:.{digits}f}"
    return text if text.startswith("1") else text.lstrip("0")


def p_phrase(p: Any, digits: int = 3) -> str:
    """``"p < .001"`` or ``"p = .023"`` (``"p –"`` when missing)."""
    s = fmt_p(p, digits)
    return f"p {s}" if s.startswith(("<", "–")) else f"p = {s}"


def fmt_pct(x: Any, digits: int = 1, missing: str = "–", sign: bool = True) -> str:
    """A fraction as a percentage: ``0.3125`` → ``"31.2%"`` (``sign=False``: ``"31.2"``)."""
    if _missing(x):
        return missing
    text = f"{float(x) * 100:.{digits}f}"
    return text + ("%" if sign else "")


def fmt_num(x: Any, digits: int = 3, missing: str = "–") -> str:
    """Integers as they are, floats with ``digits`` decimals, anything else via ``str``."""
    if _missing(x):
        return missing
    if isinstance(x, (bool, np.bool_)):
        return CHECK[bool(x)]
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        value = float(x)
        return f"{value:.{digits}f}"
    return str(x)


def fmt_ci(estimate: Any, low: Any, high: Any, *, percent: bool = True, digits: int | None = None) -> str:
    """``"31.2% [25.0, 37.5]"`` (percent) or ``"0.312 [0.250, 0.375]"``."""
    if percent:
        d = 1 if digits is None else digits
        return f"{fmt_pct(estimate, d)} [{fmt_pct(low, d, sign=False)}, {fmt_pct(high, d, sign=False)}]"
    d = 3 if digits is None else digits
    return f"{fmt_num(estimate, d)} [{fmt_num(low, d)}, {fmt_num(high, d)}]"


def check(value: Any) -> str:
    """``True`` → ✓, ``False`` → ✗, ``None``/NaN → —; strings ``"True"``/``"False"`` as well."""
    if _missing(value):
        return CHECK[None]
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return CHECK[low == "true"]
        return value
    return CHECK[bool(value)]


def stat_cell(row: Mapping[str, Any], *, percent: bool = True, p: str = "p") -> str:
    """One test result in one cell: ``"31.2% [25.0, 37.5], p < .001"`` from ``median``, ``ci_low``,
    ``ci_high`` and ``p`` (a row of ``class_sensitivity_test(...).as_row()`` or of ``table1_full``)."""
    return f"{fmt_ci(row['median'], row['ci_low'], row['ci_high'], percent=percent)}, {p_phrase(row[p])}"


# --------------------------------------------------------------------------- rendered blocks


class Block:
    """Rendered output: ``html`` for rich displays (``_repr_html_``), ``text`` for everything else."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def __add__(self, other: Block) -> Block:
        return Block(self.html + other.html, f"{self.text}\n\n{other.text}")


def scroll(content: str | Block) -> Block:
    """Wrap HTML in a box that scrolls sideways on its own when it is wider than the column."""
    inner = content.html if isinstance(content, Block) else content
    text = content.text if isinstance(content, Block) else content
    box = f'<div class="{SCROLL_CLASS}" style="overflow-x:auto;max-width:100%">{inner}</div>'
    return Block(box, text)


def collapsed(short: Block, long: Block, summary: str = "Show all rows") -> Block:
    """``short`` shown, ``long`` folded underneath in ``<details>`` (the reader opens it with a click)."""
    body = (f'{short.html}<details class="casekit-details"><summary>{html.escape(summary)}</summary>'
            f"{long.html}</details>")
    return Block(f'<div class="casekit-collapsed">{body}</div>', f"{short.text}\n\n[{summary}]\n{long.text}")


def _text_grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A fixed-width plain-text table (columns left-aligned, two spaces apart; a cell's line breaks
    → ", ", or a space before a bracketed interval)."""
    rows = [[c.replace("\n[", " [").replace("\n", ", ") for c in r] for r in rows]
    width = [max([len(h), *(len(r[j]) for r in rows)]) for j, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, width)).rstrip(),
             "  ".join("-" * w for w in width)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                bold: Sequence[Sequence[bool]] | None, numeric: Sequence[bool], caption: str | None,
                row_header: bool) -> str:
    def cell(tag: str, text: str, j: int, strong: bool = False) -> str:
        align = "right" if numeric[j] else "left"
        lines = text.split("\n")  # a line break inside a cell; short lines never wrap (the box scrolls)
        content = "<br>".join(html.escape(line) for line in lines)
        if max(map(len, lines)) <= NOWRAP_CHARS:
            align += ";white-space:nowrap"
        if strong:
            content = f"<strong>{content}</strong>"
        return f'<{tag} style="{_CELL};text-align:{align}">{content}</{tag}>'

    head = "".join(cell("th", h, j) for j, h in enumerate(header))
    body = []
    for i, r in enumerate(rows):
        tds = [cell("th" if (row_header and j == 0) else "td", c, j, bool(bold and bold[i][j]))
               for j, c in enumerate(r)]
        body.append("<tr>" + "".join(tds) + "</tr>")
    cap = (f'<caption style="caption-side:top;text-align:left">{html.escape(caption)}</caption>' if caption
           else "")
    return (f'<table class="{TABLE_CLASS}" style="border-collapse:collapse;font-size:0.9em">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


# --------------------------------------------------------------------------- DataFrames

P_COLUMNS = ("p", "p_holm", "p_one_sided", "p_two_sided", "p_value", "p_adjusted", "sign_p")
#: Shown names of the project's column names (anything else keeps its own name).
HEADERS: dict[str, str] = {
    "n_excluded": "excluded", "n_degenerate": "degenerate", "n_zero": "at threshold", "ci_low": "CI low",
    "ci_high": "CI high", "p_holm": "p (Holm)", "p_one_sided": "p (one-sided)",
    "p_two_sided": "p (two-sided)", "reject": "rejects H0", "reject_holm": "rejects H0 (Holm)",
    "share_below": "share below threshold", "layer_name": "layer (name)", "sd": "SD", "d_z": "d_z",
    "sign_p": "sign test p",
}


def _redundant_columns(df: pd.DataFrame) -> list[str]:
    """Columns that repeat another: ``model`` beside ``Model`` (same thing, display name), ``p_fmt`` beside
    ``p`` (same number, pre-formatted), and exact duplicates of an earlier column."""
    cols = list(df.columns)
    drop = []
    for c in cols:
        if not isinstance(c, str):
            continue
        if (c.islower() and c.capitalize() in cols and c.capitalize() != c
                or c.endswith("_fmt") and c[:-4] in cols):
            drop.append(c)
    seen: list[str] = []
    for c in cols:
        if c in drop:
            continue
        if any(df[c].equals(df[s]) for s in seen):
            drop.append(c)
        else:
            seen.append(c)
    return drop


def _column_formatter(name: str, series: pd.Series, percent: Iterable[str],
                      digits: int) -> Callable[[Any], str]:
    if name in percent:
        return fmt_pct
    if name in P_COLUMNS or (isinstance(name, str) and name.startswith("p_") and "fmt" not in name
                              and pd.api.types.is_float_dtype(series)):
        return fmt_p
    values = series.dropna()
    if len(values) and all(isinstance(v, (bool, np.bool_)) for v in values):
        return check
    if len(values) and pd.api.types.is_float_dtype(series) and bool((values == np.round(values)).all()):
        return lambda x: fmt_num(x if _missing(x) else int(x))  # counts stored as floats (e.g. after a merge)
    return lambda x: fmt_num(x, digits)


def table(df: pd.DataFrame | pd.Series, *, columns: Sequence[str] | None = None,
          headers: Mapping[str, str] | None = None, percent: Iterable[str] = (),
          formats: Mapping[str, Callable[[Any], str]] | None = None, digits: int = 3,
          bold: pd.DataFrame | None = None, caption: str | None = None, row_header: bool = False,
          max_rows: int | None = None, summary: str | None = None, keep_duplicates: bool = False) -> Block:
    """A DataFrame (or Series) as a readable table in a scrolling box.

    ``columns``: which to show, in order (default all but redundant ones, see below); ``headers``: shown
    names (default :data:`HEADERS`, else the column's own name); ``percent``: columns holding fractions shown
    as percentages; ``formats``: a formatter per column (overrides the defaults: p-columns via :func:`fmt_p`,
    bool columns via :func:`check`, other numbers via :func:`fmt_num` with ``digits``).
    A meaningful index (named, or not integers) becomes the first column(s); a RangeIndex or the unnamed
    integer positions a filter leaves are never shown.
    ``model``/``Model``-style and ``p``/``p_fmt``-style pairs and exact duplicates keep only one column
    unless ``keep_duplicates``.  ``bold``: a bool frame with the shown rows/columns (e.g. significant cells).
    ``max_rows``: show the first rows and fold the full table under ``summary`` (:func:`collapsed`).
    """
    if isinstance(df, pd.Series):
        df = df.to_frame(name=df.name if df.name is not None else "value")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"table() needs a pandas DataFrame or Series, got {type(df).__name__}")
    if isinstance(df.columns, pd.MultiIndex):
        df = df.copy()
        df.columns = [" · ".join(str(p) for p in c if str(p)) for c in df.columns]
    # row positions left by a filter (an unnamed integer index) say nothing: dropped like a RangeIndex
    positions = df.index.name is None and not isinstance(df.index, pd.MultiIndex) and \
        pd.api.types.is_integer_dtype(df.index.dtype)
    if not positions and (not isinstance(df.index, pd.RangeIndex) or df.index.name is not None):
        df = df.reset_index()
    if columns is None:
        columns = [c for c in df.columns if keep_duplicates or c not in _redundant_columns(df)]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"table(): no column(s) {missing}; the frame has {list(df.columns)}")
    names = {**HEADERS, **(headers or {})}
    percent, formats = set(percent), dict(formats or {})
    fmts = [formats.get(c) or _column_formatter(c, df[c], percent, digits) for c in columns]
    header = [str(names.get(c, c)) for c in columns]
    rows = [[f(v) for f, v in zip(fmts, rec)] for rec in df[list(columns)].itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in columns]
    mask = None
    if bold is not None:
        mask = [[bool(bold[c].iloc[i]) if c in bold.columns else False for c in columns]
                for i in range(len(df))]

    def render(n: int | None) -> Block:
        rs = rows[:n] if n is not None else rows
        return scroll(Block(_html_table(header, rs, bold=mask, numeric=numeric, caption=caption,
                                        row_header=row_header), _text_grid(header, rs)))

    if max_rows is not None and len(rows) > max_rows:
        return collapsed(render(max_rows), render(None),
                         summary or f"All {len(rows)} rows (the first {max_rows} are shown above)")
    return render(None)


def pivot(full: pd.DataFrame, *, rows: str = "Method", columns: str = "Model",
          cell: Callable[[Mapping[str, Any]], str] = stat_cell, bold: str | None = "reject",
          caption: str | None = None, corner: str | None = None) -> Block:
    """A long result frame as ``rows × columns`` with one formatted cell per record (default: methods ×
    models, cells ``"median [CI], p"`` of a ``table1_full``/``table2_full`` frame, the p on a second line
    in HTML; ``bold`` names a bool
    column whose true cells are bold — the significant tests).  Row and column order: first appearance
    (the builders already sort in the paper's order).  A (row, column) pair that repeats raises."""
    for c in (rows, columns):
        if c not in full.columns:
            raise ValueError(f"pivot(): no column {c!r}; the frame has {list(full.columns)}")
    dup = full.duplicated([rows, columns])
    if dup.any():
        first = full.loc[dup, [rows, columns]].iloc[0].tolist()
        raise ValueError(f"pivot(): {int(dup.sum())} repeated ({rows}, {columns}) pair(s), e.g. {first}; "
                         "select one layer/seed/comparison first")
    row_keys, col_keys = list(dict.fromkeys(full[rows])), list(dict.fromkeys(full[columns]))
    # the interval and the p-value on their own lines: narrow columns (four models fit a 1280 px page)
    # without breaking a number
    text = {(r[rows], r[columns]): cell(r).replace(", p ", "\np ", 1).replace(" [", "\n[", 1)
            for r in full.to_dict("records")}
    strong = {(r[rows], r[columns]): bool(r.get(bold)) and not _missing(r.get(bold))
              for r in full.to_dict("records")} if bold else {}
    header = [corner if corner is not None else str(rows), *map(str, col_keys)]
    body = [[str(rk), *(text.get((rk, ck), "–") for ck in col_keys)] for rk in row_keys]
    mask = [[False, *(strong.get((rk, ck), False) for ck in col_keys)] for rk in row_keys] if bold else None
    numeric = [False] * len(header)
    return scroll(Block(_html_table(header, body, bold=mask, numeric=numeric, caption=caption,
                                    row_header=True),
                        _text_grid(header, body)))


def _fidelity_cell(r: Mapping[str, Any]) -> str:
    """``"0.170 ± 0.081, p = .023"``: mean ± SD of the confidence drop, one-sided p against CASE."""
    p = "" if _missing(r.get("p_one_sided")) else f", {p_phrase(r['p_one_sided'])}"
    return f"{fmt_num(r['mean'])} ± {fmt_num(r['sd'])}{p}"


def fidelity_pivot(full3: pd.DataFrame, *, caption: str | None = None) -> Block:
    """Table III (``table3_full``) as methods × models, cells ``"mean ± SD, p"`` (one-sided, against CASE;
    CASE's own cell has no p); each model's highest mean drop bold, as in the paper."""
    return pivot(full3, cell=_fidelity_cell, bold="highest", caption=caption)


def sensitivity_table(full: pd.DataFrame, *, by: Sequence[str] = ("Model", "Method"),
                      max_rows: int | None = None, caption: str | None = None) -> Block:
    """A class-sensitivity frame (``table1_full``, ``table2_full``, ``seed_agreement``) long and readable:
    ``by`` columns, n, excluded, median [95 % CI], rejects H0 ✓/✗, p, p (Holm) (and the sign test)."""
    frame = pd.DataFrame({c: full[c] for c in by})
    frame["n"] = full["n"]
    if "n_excluded" in full:
        frame["excluded"] = full["n_excluded"]
    frame["median [95% CI]"] = [fmt_ci(r["median"], r["ci_low"], r["ci_high"])
                                for r in full.to_dict("records")]
    frame["rejects H0"] = full["reject"].astype(object)  # the verdict next to the median it is about
    frame["p"] = full["p"]
    if "p_holm" in full:
        frame["p (Holm)"] = full["p_holm"]
    if "sign_p" in full:  # the exact sign test of the median and whether it disagrees with the Wilcoxon
        frame["sign test p"] = full["sign_p"]
        frame["conflict"] = full["conflict"].astype(object)
    fmts = {"p (Holm)": fmt_p, "sign test p": fmt_p}
    return table(frame, formats=fmts, max_rows=max_rows, caption=caption, keep_duplicates=True)


def claims_table(claims: pd.DataFrame, *, columns: Sequence[str] | None = None, caption: str | None = None,
                 max_rows: int | None = None) -> Block:
    """A claims frame (``section, claim, paper says, this run, supported``) with ✓/✗/— verdicts."""
    cols = list(columns) if columns is not None else [c for c in claims.columns]
    fmts = {c: check for c in cols
            if c == "supported" or claims[c].map(lambda v: isinstance(v, (bool, np.bool_))
                                                 or _missing(v)).all()}
    return table(claims, columns=cols, formats=fmts, caption=caption, max_rows=max_rows, keep_duplicates=True)


def settings(config: Any, *, fields: Sequence[str] | None = None, caption: str | None = None) -> Block:
    """A dataclass (e.g. a :class:`~casekit.study.config.RunConfig`) or a mapping as a two-column table
    ``setting | value`` (tuples joined by ", "), in ``fields`` order (default: every field)."""
    import dataclasses

    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        items = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif isinstance(config, Mapping):
        items = dict(config)
    else:
        raise TypeError(f"settings() needs a dataclass instance or a mapping, got {type(config).__name__}")
    names = list(items) if fields is None else list(fields)
    unknown = [n for n in names if n not in items]
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; the config has {sorted(items)}")

    def shown(value: Any) -> str:
        if isinstance(value, (tuple, list)):
            return ", ".join(map(str, value)) if value else "(none)"
        return str(value)

    frame = pd.DataFrame({"setting": names, "value": [shown(items[n]) for n in names]})
    return table(frame, caption=caption)
