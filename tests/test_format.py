"""Readable tables: the rendered HTML and text hold the right rounded numbers, ✓/✗, no index column, no
duplicate columns, and sit in a scrolling box."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from casekit.evaluation.stats import class_sensitivity_test
from casekit.report import format as fmt


class Cells(HTMLParser):
    """Rows of a rendered table: lists of cell texts (th and td), plus the tags seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[tuple[str, dict]] = []
        self._cell: list[str] | None = None
        self.bold: list[str] = []
        self._strong = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "strong":
            self._strong = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "strong":
            self._strong = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
            if self._strong:
                self.bold.append(data)


def cells(block: fmt.Block) -> Cells:
    parser = Cells()
    parser.feed(block._repr_html_())
    return parser


@pytest.mark.parametrize("p, text",
                         [(0.0234, ".023"), (0.00049, "< .001"), (0.001, ".001"), (0.0005, "< .001"),
                          (0.00149, ".001"),
                          (0.9996, "1.000"), (1.0, "1.000"), (0.5, ".500"), (float("nan"), "–"),
                          (None, "–")])
def test_fmt_p(p, text):
    assert fmt.fmt_p(p) == text


def test_fmt_p_rejects_non_probabilities():
    with pytest.raises(ValueError, match="p-value must lie in"):
        fmt.fmt_p(1.5)


def test_number_rules():
    assert fmt.fmt_pct(0.31249) == "31.2%" and fmt.fmt_pct(0.31251) == "31.3%" and fmt.fmt_pct(1) == "100.0%"
    assert fmt.fmt_pct(float("nan")) == "–"
    assert fmt.fmt_ci(0.5, 0.25, 0.875) == "50.0% [25.0, 87.5]"
    assert fmt.fmt_ci(0.5, 0.25, 0.875, percent=False) == "0.500 [0.250, 0.875]"
    assert fmt.fmt_num(3) == "3" and fmt.fmt_num(np.int64(7)) == "7" and fmt.fmt_num(0.123456) == "0.123"
    values = (True, False, None, np.nan, np.bool_(True), "False")
    assert [fmt.check(v) for v in values] == ["✓", "✗", "—", "—", "✓", "✗"]
    assert fmt.p_phrase(0.0001) == "p < .001" and fmt.p_phrase(0.04) == "p = .040"


def test_stat_cell_from_a_real_test():
    x = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.1, 0.2, 0.25, 0.15, 0.3, 0.05])
    r = class_sensitivity_test(x, threshold=0.5, n_boot=500).as_row()
    assert r["median"] == pytest.approx(0.225)
    text = fmt.stat_cell(r)
    lo, hi = f"{r['ci_low'] * 100:.1f}", f"{r['ci_high'] * 100:.1f}"
    assert text == f"22.5% [{lo}, {hi}], p < .001"  # 12 values all below .5: exact p = 1/4096


def table1_like() -> pd.DataFrame:
    """A frame shaped like ``table1_full``: raw and display columns, a pre-formatted p, verdicts."""
    rows = []
    for mi, (model, Model) in enumerate([("densenet", "DenseNet"), ("resnet", "ResNet")]):
        for j, (method, Method) in enumerate([("ablationcam", "AblationCAM"), ("case", "CASE")]):
            p = [0.0234, 0.00001, 0.51, 0.0049][2 * mi + j]
            rows.append({"model": model, "layer": "final_conv", "method": method, "Model": Model,
                         "Method": Method, "n": 20 + j, "median": [0.41234, 0.2, 0.55, 0.30049][2 * mi + j],
                         "ci_low": 0.1, "ci_high": 0.6, "p": p, "p_fmt": f"{p:.5f}",
                         "p_holm": min(1.0, p * 4), "reject": p < 0.05})
    return pd.DataFrame(rows)


def test_table_drops_index_and_duplicates_and_formats():
    df = table1_like().set_index(pd.Index([10, 11, 12, 13]))  # a leftover index must not become a column...
    df.index.name = None
    block = fmt.table(df.reset_index(drop=True), percent=["median", "ci_low", "ci_high"])
    parsed = cells(block)
    header = parsed.rows[0]
    assert header == ["layer", "Model", "Method", "n", "median", "CI low", "CI high", "p", "p (Holm)",
                      "rejects H0"]
    first = dict(zip(header, parsed.rows[1]))
    assert first == {"layer": "final_conv", "Model": "DenseNet", "Method": "AblationCAM", "n": "20",
                     "median": "41.2%", "CI low": "10.0%", "CI high": "60.0%", "p": ".023",
                     "p (Holm)": ".094", "rejects H0": "✓"}
    assert [r[header.index("p")] for r in parsed.rows[1:]] == [".023", "< .001", ".510", ".005"]
    assert [r[-1] for r in parsed.rows[1:]] == ["✓", "✓", "✗", "✓"]
    # the text form holds the same cells
    assert ".023" in block.text and "< .001" in block.text and "✗" in block.text and "41.2%" in block.text
    assert str(block) == block.text and "<" not in block.text.replace("< .001", "")


def test_table_keeps_a_meaningful_index_and_wraps_in_a_scroll_box():
    sizes = table1_like().groupby("Model").size()  # the raw-dump case of issue 11: a groupby().size() Series
    block = fmt.table(sizes.rename("images"))
    html = block._repr_html_()
    assert html.startswith(f'<div class="{fmt.SCROLL_CLASS}" style="overflow-x:auto;max-width:100%">')
    assert html.endswith("</div>")
    assert cells(block).rows == [["Model", "images"], ["DenseNet", "2"], ["ResNet", "2"]]
    assert 'class="dataframe"' not in html  # the book's tests count pandas tables separately


def test_pivot_methods_by_models():
    block = fmt.pivot(table1_like())
    parsed = cells(block)
    assert parsed.rows[0] == ["Method", "DenseNet", "ResNet"]
    assert parsed.rows[1] == ["AblationCAM", "41.2%[10.0, 60.0]p = .023", "55.0%[10.0, 60.0]p = .510"]
    assert parsed.rows[2] == ["CASE", "20.0%[10.0, 60.0]p < .001", "30.0%[10.0, 60.0]p = .005"]
    # the significant cells are bold
    assert sorted(parsed.bold) == sorted(["41.2%", "[10.0, 60.0]", "p = .023", "20.0%", "[10.0, 60.0]",
                                          "p < .001", "30.0%", "[10.0, 60.0]", "p = .005"])
    html = block._repr_html_()
    # the interval: 2nd line, p: 3rd line
    assert ("white-space:nowrap\"><strong>41.2%<br>[10.0, 60.0]<br>p = .023</strong></td>") in html
    assert "AblationCAM  41.2% [10.0, 60.0], p = .023" in block.text
    with pytest.raises(ValueError, match="repeated"):
        fmt.pivot(pd.concat([table1_like(), table1_like()]))
    with pytest.raises(ValueError, match="no column 'Layer'"):
        fmt.pivot(table1_like(), columns="Layer")


def test_fidelity_pivot_cells():
    full = pd.DataFrame([
        {"Model": "VGG", "Method": "CASE", "mean": 0.16959, "sd": 0.2, "p_one_sided": math.nan,
         "highest": False},
        {"Model": "VGG", "Method": "Grad-CAM", "mean": 0.2251, "sd": 0.11617, "p_one_sided": 0.23233,
         "highest": True}])
    parsed = cells(fmt.fidelity_pivot(full))
    assert parsed.rows[1:] == [["CASE", "0.170 ± 0.200"], ["Grad-CAM", "0.225 ± 0.116p = .232"]]
    assert parsed.bold == ["0.225 ± 0.116", "p = .232"]


def test_sensitivity_and_claims_tables():
    parsed = cells(fmt.sensitivity_table(table1_like()))
    assert parsed.rows[0] == ["Model", "Method", "n", "median [95% CI]", "rejects H0", "p", "p (Holm)"]
    assert parsed.rows[3] == ["ResNet", "AblationCAM", "20", "55.0% [10.0, 60.0]", "✗", ".510", "1.000"]
    claims = pd.DataFrame({"section": ["RQ1", "RQ2", "RQ2"], "claim": ["a", "b", "c"],
                           "supported": [True, False, None]})
    parsed = cells(fmt.claims_table(claims))
    assert [r[-1] for r in parsed.rows[1:]] == ["✓", "✗", "—"]


def test_long_table_collapses_under_a_short_one():
    df = pd.DataFrame({"image": range(30), "agreement": np.linspace(0, 1, 30)})
    block = fmt.table(df, percent=["agreement"], max_rows=5, summary="All 30 images")
    html = block._repr_html_()
    head, _, folded = html.partition("<details")
    assert cells(fmt.Block(head, "")).rows[1:] == [[str(i), f"{v * 100:.1f}%"] for i, v in
                                                   zip(range(5), np.linspace(0, 1, 30)[:5])]
    assert "<summary>All 30 images</summary>" in folded
    assert len(cells(fmt.Block(folded, "")).rows) == 31  # header + every row
    assert html.count(fmt.SCROLL_CLASS) == 2  # both tables scroll in their own box
    assert "[All 30 images]" in block.text


def test_short_cells_never_wrap_long_ones_do():
    html = fmt.table(pd.DataFrame({"claim": ["a sentence of a claim that is longer than thirty-two "
                                             "characters"],
                                   "supported": [True]}))._repr_html_()
    cells_html = re.findall(r"<td[^>]*>", html)
    assert "nowrap" not in cells_html[0] and "nowrap" in cells_html[1]


def test_counts_stored_as_floats_show_as_integers():
    parsed = cells(fmt.table(pd.DataFrame({"n": [20.0, np.nan, 3.0], "x": [0.5, 1.0, 2.25]})))
    assert parsed.rows[1:] == [["20", "0.500"], ["–", "1.000"], ["3", "2.250"]]


def test_table_errors_are_clear():
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\]"):
        fmt.table(table1_like(), columns=["Model", "nope"])
    with pytest.raises(TypeError, match="DataFrame or Series"):
        fmt.table([1, 2])


def test_html_escapes_cell_text():
    html = fmt.table(pd.DataFrame({"name": ["<b>x</b> & y"]}))._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html
    assert re.search(r"<th[^>]*>name</th>", html)


def test_settings_lists_a_config_as_two_columns():
    from casekit.study.config import RunConfig

    config = RunConfig(model="resnet", methods=("gradcam", "case"))
    block = fmt.settings(config, fields=["model", "methods", "k"])
    assert "resnet" in block.html and "gradcam, case" in block.html and "0.05" in block.html
    assert block.text.splitlines()[1:] and "methods" in block.text and "layer" not in block.text
    assert "sparsity_layers" in fmt.settings(RunConfig(model="vgg")).text  # every field by default
    assert "(none)" in fmt.settings({"layers": ()}).text
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['nope'\]"):
        fmt.settings(RunConfig(model="vgg"), fields=["nope"])
    with pytest.raises(TypeError, match="dataclass instance or a mapping"):
        fmt.settings(3)


def test_filtered_rows_show_no_positions_and_sign_p_reads_as_a_p_value():
    df = pd.DataFrame({"run": ["a", "b", "c"], "sign_p": [0.00001, 0.5, 0.04]})
    parsed = cells(fmt.table(df[df["run"] != "b"]))  # index [0, 2]: positions, not data
    assert parsed.rows == [["run", "sign test p"], ["a", "< .001"], ["c", ".040"]]
    named = df.set_index(pd.Index([7, 8, 9], name="image"))
    assert cells(fmt.table(named)).rows[0] == ["image", "run", "sign test p"]  # a named index is data
