"""The chapters' opening summaries (casekit.report.summary) on hand-made claims frames."""

import numpy as np
import pandas as pd
import pytest

from casekit.report import summary as S
from casekit.report.claims import claims_frame


def _frame(verdicts):
    return claims_frame([{"section": "s", "claim": f"claim {i}.", "paper says": "p", "this run": f"v{i}",
                          "supported": v} for i, v in enumerate(verdicts)])


def test_claims_summary_counts_and_quotes_the_numbers():
    text = S.claims_summary(_frame([True, False, None, False]), what="chapter X")
    assert text.startswith("Of the 4 statements of the paper checked in chapter X, this run supports 1 ✓, "
                           "contradicts 2 ✗ and cannot decide 1 —.")
    assert "Not supported: claim 1 (this run: v1) (1 more in the table at the end)." in text
    follow = _frame([False, False])
    follow.loc[0, "claim"] = "… and also as a fraction."  # a continuation is not quoted when a whole claim is
    assert "Not supported: claim 1 (this run: v1)" in S.claims_summary(follow)
    assert text.endswith("Supported: claim 0 (this run: v0).")
    assert 2 <= text.count(". ") + 1 <= 4


def test_claims_summary_all_supported_and_undecided_and_empty():
    assert S.claims_summary(_frame([True, True])) == (
        "Of the 2 statements of the paper checked in this chapter, this run supports 2 ✓, contradicts 0 ✗. "
        "Supported: claim 0 (this run: v0).")
    undecided = S.claims_summary(_frame([None]))
    assert "cannot decide 1 —" in undecided and "too small" in undecided and "Supported" not in undecided
    assert "No statement" in S.claims_summary(_frame([]))
    with pytest.raises(ValueError, match="no column 'supported'"):
        S.claims_summary(pd.DataFrame({"claim": [], "this run": []}))


def test_profile_banner_counts_models_and_images():
    maps = pd.DataFrame({"model": ["a", "a", "a", "b", "b"], "image_id": [0, 1, 1, 0, 1]})
    text = S.profile_banner("demo", maps)
    assert text.startswith("> **Profile `demo`**: casekit's synthetic benchmark")
    assert text.endswith("This run: 2 models (a, b), 2 images per model.")
    uneven = S.profile_banner("paper", maps.iloc[:4])
    assert "ImageNet" in uneven and "1–2 images per model" in uneven
    # two seeds of one model, 2 images each: counted per run, not as the union of their samples
    seeds = pd.DataFrame({"model": ["a"] * 4, "seed": [0, 0, 1, 1], "image_id": [0, 1, 2, 3]})
    banner = S.profile_banner("demo", seeds)
    assert banner.endswith("This run: 1 model (a), 2 images per model, seed and layer.")
    assert S.profile_banner("x") == "> **Profile `x`**."  # a new profile is named, never refused
    assert "CIFAR-10" in S.profile_banner("cifar10")
    real = pd.DataFrame({"model": ["resnet20", "densenet40"], "image_id": [0, 0]})
    assert "2 models (DenseNet-BC-40, ResNet-20)" in S.profile_banner("cifar10", real)  # display names
    # the sample records say how many correctly classified images each run could draw from
    samples = pd.DataFrame({"model": ["resnet20", "densenet40"], "n_images": [500, 500],
                            "available": [812.0, 846.0], "pool": [1000, 1000], "scanned": [1000, 1000]})
    said = S.profile_banner("cifar10", real, samples)
    assert said.endswith("1 image per model (drawn with a seed among the 812–846 correctly classified of "
                         "1,000 evaluated images available to each run).")
    full = samples.assign(n_images=[812, 846])
    assert S.sample_sentence(full) == ("every correctly classified image of its pool: 812–846 of 1,000 "
                                       "evaluated images")
    partial = samples.assign(available=[float("nan")] * 2, scanned=[620, 640], pool=[5000, 5000])
    assert S.sample_sentence(partial) == ("the first correctly classified ones of a seeded order, found "
                                          "among the first 620–640 of 5,000 evaluated images")
    assert S.sample_sentence(samples.iloc[:0]) == ""
    with pytest.raises(ValueError, match="non-empty string"):
        S.profile_banner("")
    with pytest.raises(ValueError, match="unknown chapter"):
        S.chapter_summary(None, "nope")


def test_chapter_summary_uses_the_chapter_claims(monkeypatch):
    seen = {}

    def fake(res, **kw):
        seen.update(kw, res=res)
        return _frame([False])

    monkeypatch.setitem(S.CHAPTER_CLAIMS, "diagnostic", (fake, "the test chapter"))
    res = type("R", (), {"maps": pd.DataFrame({"model": ["m"], "image_id": [3]})})()
    text = S.chapter_summary(res, "diagnostic", profile="demo", threshold=0.4)
    assert seen == {"threshold": 0.4, "res": res}
    assert text.split("\n\n")[0].endswith("1 model (m), 1 image per model.")
    assert text.split("\n\n")[1] == ("Of the 1 statement of the paper checked in the test chapter, this run "
                                     "supports 0 ✓, contradicts 1 ✗. Not supported: claim 0 (this run: v0).")


def test_colours_are_fixed_per_family_and_distinct_per_method():
    from casekit.report import naming as N

    four = N.model_colours(["vgg", "resnet", "densenet", "convnext"])
    assert four == {"convnext": "#cc78bc", "densenet": "#de8f05", "resnet": "#0173b2", "vgg": "#029e73"}
    # the same family keeps its colour whatever else is plotted, paper names included
    assert N.model_colours(["vgg"]) == {"vgg": "#029e73"}
    paper = N.model_colours(["densenet201", "densenet201-cifar100", "resnet50", "other"])
    assert paper["densenet201"] == paper["densenet201-cifar100"] == "#de8f05"
    assert paper["resnet50"] == "#0173b2"
    assert paper["other"] not in N.FAMILY_COLOURS.values()
    cifar = N.model_colours(["resnet20", "resnet56", "densenet40", "shufflenet"])
    assert cifar["resnet20"] == "#0173b2" and cifar["densenet40"] == "#de8f05"
    assert len(set(cifar.values())) == 4  # two ResNets: the second takes a spare colour
    assert len(set(N.METHOD_COLOURS.values())) == len(N.METHOD_COLOURS) == 6


def test_conflict_sentence_counts_the_tests_that_disagree():
    full = pd.DataFrame({"sign_p": [0.01, 0.2, 0.03, float("nan")], "conflict": [False, True, False, False]})
    text = S.conflict_sentence(full)
    assert text.startswith("The paper's Wilcoxon test and the exact sign test of the median disagree in 1 of "
                           "3 tests")
    assert "agree in all 2 tests" in S.conflict_sentence(full.iloc[[0, 2]])
    with pytest.raises(ValueError, match="conflict"):
        S.conflict_sentence(pd.DataFrame({"p": [0.1]}))


def test_quickstart_summary_from_its_numbers():
    agreement = pd.DataFrame({"Grad-CAM": [0.8, 0.6, 0.9], "CASE": [0.1, np.nan, 0.3]})
    text = S.quickstart_summary(agreement, [True, False, True], {"Grad-CAM": 0.25, "CASE": 0.5}, chance=0.04,
                              k=0.05, model="The ResNet demo model")
    assert text.startswith("The ResNet demo model classifies 2 of 3 test images correctly "
                           "(misclassified: image 1).")
    assert "from 20% (CASE) to 80% (Grad-CAM)" in text  # CASE's median skips the NaN pair
    assert "25% (Grad-CAM) to 50% (CASE)" in text and "would put 4% there" in text
    assert "With 3 images" in text
    allright = S.quickstart_summary(agreement, [True] * 3, {}, chance=0.04, k=0.05, model="M")
    assert "misclassified" not in allright and "own mark" not in allright
    with pytest.raises(ValueError, match="correct has 2 entries for 3 images"):
        S.quickstart_summary(agreement, [True, True], {}, chance=0.0, k=0.05, model="M")


def test_contrast_k_sentence_reads_the_table():
    summary = pd.DataFrame({
        "Model": ["ResNet"] * 4 + ["VGG"], "contrast_strategy": ["confusion"] * 3 + ["logits", "confusion"],
        "comparison": "top1_vs_top2", "contrast_k": [3, 1, 2, 1, 1],
        "median": [0.30, 0.10, 0.05, 0.9, np.nan], "reject_holm": [False, True, True, True, False]})
    text = S.contrast_k_sentence(summary)
    assert text == ("On ResNet, CASE's median agreement is 10% at K = 1 and 30% at K = 3, lowest at K = 2 "
                    "(5%); the test rejects H0 at 2 of 3 values of K. On VGG no K gave a testable sample.")
    assert "90%" in S.contrast_k_sentence(summary, strategy="logits")
    with pytest.raises(ValueError, match="reject_holm"):
        S.contrast_k_sentence(summary.drop(columns="reject_holm"))
