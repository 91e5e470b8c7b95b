"""The cifar10 profile: subject (held-out split, correct-only sample, layers), configs, missing inputs, the
book driver's plan for two profiles and the landing page's claims table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REFERENCE_CIFAR10, needs_shared_cifar10

from casekit import book
from casekit.report import overview
from casekit.report.claims import CLAIMS
from casekit.study import profiles
from casekit.study.config import RunConfig
from casekit.study.subject import cifar10_split, load_subject, sample_images
from casekit.subjects import reference as R


def test_cifar10_configs_cover_rq1_rq2_sparsity_and_norm5():
    configs = profiles.cifar10_configs()
    names = [c.name for c in configs]
    assert names == ["resnet20-seed0-final_conv", "resnet56-seed0-final_conv", "densenet40-seed0-final_conv",
                     "shufflenet-seed0-final_conv", "densenet40-seed0-norm5", "shufflenet-seed0-norm5"]
    for c in configs:
        assert c.profile == "cifar10" and c.rq1 and c.rq2 and c.sparsity == (c.layer,)
        assert len(c.methods) == 6 and c.n_images == profiles.CIFAR10_N_IMAGES
    assert profiles.study_configs("cifar10", n_images=7)[0].n_images == 7
    assert profiles.profile_models("cifar10") == ("resnet20", "resnet56", "densenet40", "shufflenet")
    assert profiles.study_config("cifar10", "densenet40", layer="norm5").layer == "norm5"
    assert "ground-truth" in profiles.CIFAR10_NOTE and "seed" in profiles.CIFAR10_NOTE
    with pytest.raises(ValueError, match="cifar10"):
        profiles.study_configs("imagenet")


def test_cifar10_split_is_stratified_disjoint_and_seeded():
    labels = torch.arange(10).repeat_interleave(200)
    held, pool = cifar10_split(labels, 0)
    assert len(set(held.tolist()) & set(pool.tolist())) == 0 and len(held) + len(pool) == 2000
    assert torch.bincount(labels[held], minlength=10).tolist() == [100] * 10
    assert torch.equal(cifar10_split(labels, 0)[0], held)
    assert not torch.equal(cifar10_split(labels, 1)[0], held)


def test_missing_inputs_names_every_file_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CASEKIT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CASEKIT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("CASEKIT_OFFLINE", "1")
    problems = profiles.missing_inputs("cifar10")
    text = "\n".join(problems)
    assert "cifar10 profile needs" in problems[0]
    assert "python -m casekit.subjects.fetch cifar10" in problems[0]
    for name in R.NAMES:
        assert R.NETWORKS[name].file in text
    assert "CIFAR-10 test images" in text
    assert profiles.missing_inputs("demo") == []


@needs_shared_cifar10()
def test_cifar10_subject_heldout_confusion_and_correct_sample(monkeypatch):
    monkeypatch.setenv("CASEKIT_SHARED", str(REFERENCE_CIFAR10.parents[1]))
    assert profiles.missing_inputs("cifar10") == []
    config = RunConfig(model="resnet20", profile="cifar10", n_images=12)
    subject = load_subject(config)
    raw, labels = R.images()
    held, pool = cifar10_split(labels, config.sample_seed)
    assert torch.equal(torch.as_tensor(subject.pool), pool)
    assert int(subject.confusion.sum()) == len(held) == 1000  # the confusion matrix counts the held-out half
    assert subject.layer_name("final_conv") == "layer3.2.conv2"
    # equal counts are ordered by the held-out mean softmax probabilities, as on the demo and paper profiles
    # (before, the cifar10 subject had no tiebreak and 3 of ResNet-20's K = 3 sets were ordered by index)
    from casekit.cam.contrast import confusion_matrix, contrast_sets
    from casekit.study import subject as S
    from casekit.subjects import data as D

    counts, probs = confusion_matrix(subject.model, D.subset_loader(subject.dataset, held, batch_size=100),
                                     kind="both")
    assert torch.equal(subject.confusion, counts.long()) and torch.allclose(subject.tiebreak, probs.double())
    changed = (contrast_sets(counts, 3) != contrast_sets(counts, 3, probs)).any(1)
    assert int(changed.sum()) == 3
    monkeypatch.setattr(S, "confusion_matrix", lambda *a, **k: pytest.fail("not read from the cache"))
    assert torch.equal(load_subject(config).tiebreak, subject.tiebreak)  # a second load reads the cache
    x, y = subject.dataset[int(pool[0])]
    assert torch.allclose(x, R.normalize(raw[int(pool[0])][None], "resnet20")[0])
    ids = sample_images(config, subject)
    assert len(ids) == 12 and set(ids) <= set(pool.tolist())
    with torch.no_grad():
        pred = subject.model(torch.stack([subject.dataset[i][0] for i in ids])).argmax(1)
    assert pred.tolist() == [int(subject.dataset[i][1]) for i in ids]  # correctly classified only
    for name, norm5 in (("densenet40", "bn1"), ("shufflenet", "conv5.1")):  # the norm5 runs' layers resolve
        model, info = R.model(name)
        assert info["layers"]["norm5"] == norm5 and dict(model.named_modules())[norm5] is not None


def test_book_plans_each_profile_notebook_once_per_profile(tmp_path):
    a = tmp_path / "00_q.ipynb"
    b = tmp_path / "01_a.ipynb"
    import nbformat

    for path, src in ((a, "n_images = 8\n"), (b, "profile = 'demo'\nn_images = 300\n")):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(src)
        cell.metadata["tags"] = ["parameters"]
        nb.cells = [cell]
        nbformat.write(nb, str(path))
    assert book.book_profiles("both") == ("demo", "cifar10")
    assert book.book_profiles("cifar10") == ("cifar10",)
    with pytest.raises(ValueError, match="unknown profile"):
        book.book_profiles("imagenet")
    profiles_ = book.book_profiles("both")
    driver = {"profile": "cifar10", "device": "cpu", "results_dir": "/r", "recompute": False}
    plans = book.plan_parameters([a, b], driver, profile="cifar10",
                                 overrides={"cifar10": {"*": {"n_images": 40}}})
    assert [p.name for p in book.profile_plans(plans, "demo", profiles_)] == ["00_q", "01_a"]
    chosen = book.profile_plans(plans, "cifar10", profiles_)
    assert [p.name for p in chosen] == ["01_a"] and chosen[0].parameters == {"profile": "cifar10",
                                                                              "n_images": 40}
    assert book.profile_subdir("demo", profiles_) == ""
    assert book.profile_subdir("cifar10", profiles_) == "cifar10"


def test_profile_toc_repeats_chapter_parts_and_says_when_not_built():
    toc = {"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "Start", "chapters": [{"file": "notebooks/00_q"}]},
        {"caption": "Paper", "chapters": [{"file": "notebooks/01_a"}, {"file": "notebooks/02_b"}]},
        {"caption": "About", "chapters": [{"file": "book/profiles"}]}]}
    out = book.profile_toc(toc, ("demo", "cifar10"), ["01_a", "02_b"])
    assert [p["caption"] for p in out["parts"]] == ["Start", "Paper — demo models",
                                                    "Paper — real CIFAR-10 networks", "About"]
    assert out["parts"][2]["chapters"] == [{"file": "notebooks/cifar10/01_a"},
                                           {"file": "notebooks/cifar10/02_b"}]
    assert out["parts"][1]["chapters"] == toc["parts"][1]["chapters"]
    missing = book.profile_toc(toc, ("demo", "cifar10"), ["01_a", "02_b"], {"cifar10": "no files"})
    assert missing["parts"][2]["chapters"] == [{"file": "book/not_built_cifar10"}]
    assert book.profile_toc(toc, ("demo",), ["01_a"]) == toc
    page = book.not_built_page("cifar10", ["casekit: resnet20-12fca82f.th is missing"])
    assert "Not built" in page and "resnet20-12fca82f.th is missing" in page
    # where casekit looked, written relative to the checkout: a published page shows no machine path
    repo = Path("/tmp/clone")
    page = book.not_built_page("cifar10", ["looked in: /tmp/clone/data/x.th, /tmp/shared/reference/y.npz, "
                                           "/home/me/.cache/casekit/z.pt (CASEKIT_CACHE)"], repo)
    assert "looked in: data/x.th, ../shared/reference/y.npz, …/casekit/z.pt (CASEKIT_CACHE)" in page
    assert "/tmp/" not in page and "/home/" not in page


def test_claims_overview_has_both_profile_columns(monkeypatch):
    records = overview.study_records()
    assert records and all("study" in c.views for c in records)

    def fake_claims(results, sparse_model="densenet", **_):
        n = len(records)
        name = results[0]  # a stand-in for a profile's Results
        values = {"demo": [True] * n, "cifar10": [False] * (n - 1) + [None]}[name]
        return pd.DataFrame({"claim": [c.statement for c in records], "this run": [f"{name} {i}" for i in
                                                                                    range(n)],
                             "supported": pd.Series(values, dtype=object)})

    monkeypatch.setattr(overview, "claims", fake_claims)
    frame = overview.claims_overview({"cifar10": ("cifar10",), "demo": ("demo",)})
    assert frame["cifar10 ✓"].tolist()[-1] == "—" and set(frame["cifar10 ✓"][:-1]) == {"✗"}
    assert set(frame["demo ✓"]) == {"✓"} and frame["demo"].iloc[0] == "demo 0"
    assert frame["paper"].tolist() == [c.paper_value for c in records]
    not_built = overview.claims_overview({"cifar10": "not built: files missing"})
    assert set(not_built["cifar10"]) == {"not built: files missing"} and set(not_built["cifar10 ✓"]) == {"—"}
    md = overview.overview_markdown(frame, {"cifar10": "real CIFAR-10 networks", "demo": "demo models"},
                                    {"03_rq1_tables": {"demo": "../notebooks/03_rq1_tables.ipynb"}})
    lines = md.splitlines()
    assert lines[0] == ("| Claim | Paper reports | This build, real CIFAR-10 networks | "
                        "This build, demo models |")
    assert len(lines) == 2 + len(records)
    rq1 = [line for line, c in zip(lines[2:], records) if c.section == "RQ1"]
    link = "→ *RQ1 tables*: [demo](../notebooks/03_rq1_tables.ipynb)"
    assert rq1 and all(line.count(link) == 1 for line in rq1)
    first = lines[2].split(" | ")
    assert first[-2] == "✗ cifar10 0" and first[-1] == "✓ demo 0 |"  # verdict, then this build's number
    ext = [c for c in records if c.extension]
    assert md.count("casekit's extension") == len(ext)
    assert {c.id for c in CLAIMS} >= set(frame["id"])


def test_cifar10_images_are_denormalised_with_each_networks_statistics():
    from casekit.study.examples import denormalizer, part_areas

    x = torch.rand(2, 3, 32, 32)
    for name in R.NAMES:
        back = denormalizer(RunConfig(model=name, profile="cifar10"))(R.normalize(x, name))
        assert torch.allclose(back, x, atol=1e-5), name
    assert part_areas("cifar10").empty  # no part masks on real images


def test_claims_overview_adds_the_diagnostic_claims_where_that_study_ran(monkeypatch):
    from casekit.report.diagnostic import MEASURE_CLAIMS

    n = len(MEASURE_CLAIMS)
    monkeypatch.setattr(overview, "claims", lambda res, **_: pd.DataFrame({
        "claim": [c.statement for c in overview.study_records()], "this run": "x",
        "supported": pd.Series([True] * len(overview.study_records()), dtype=object)}))
    monkeypatch.setattr(overview, "measure_claims", lambda rows: pd.DataFrame({
        "this run": [f"{rows} {i}" for i in range(n)],
        "supported": pd.Series([True, False] + [None] * (n - 2), dtype=object)}))
    frame = overview.claims_overview({"cifar10": ("r",), "demo": ("r",)}, {"cifar10": "rows", "demo": None})
    extra = frame[frame["chapter"] == overview.DIAGNOSTIC_CHAPTER]
    assert extra["id"].tolist() == [c.id for c in MEASURE_CLAIMS] and extra["extension"].all()
    assert extra["cifar10"].tolist() == [f"rows {i}" for i in range(n)]
    assert extra["cifar10 ✓"].tolist()[:3] == ["✓", "✗", "—"]
    assert set(extra["demo"]) == {"not run (chapter 08 was not executed)"} and set(extra["demo ✓"]) == {"—"}
    assert len(overview.claims_overview({"demo": ("r",)})) == len(overview.study_records())


def test_load_diagnostic_reads_every_stored_model(tmp_path):
    from casekit.study.diagnostic_study import DIAGNOSTIC_DIR, DIAGNOSTIC_KEY, load_diagnostic
    from casekit.study.store import ResultStore

    assert load_diagnostic(tmp_path) is None
    for model, ids in (("b", [2, 1]), ("a", [5])):
        store = ResultStore(tmp_path / DIAGNOSTIC_DIR / model, key=DIAGNOSTIC_KEY, config={"model": model})
        rows = [{k: (model if k == "model" else 0) for k in DIAGNOSTIC_KEY}
                | {"image_id": i, "value": float(i)} for i in ids]
        store.append(rows)
    df = load_diagnostic(tmp_path)
    assert df[["model", "image_id"]].values.tolist() == [["a", 5], ["b", 1], ["b", 2]]


def test_overview_numbers_are_shortened_at_item_boundaries():
    assert overview.shorten("a: 1%; b: 2%", limit=20) == "a: 1%; b: 2%"
    assert overview.shorten("a: 1%; b: 2%; c: 3%", limit=12) == "a: 1%; b: 2% …"
    assert overview.shorten("one long item without separators", limit=12) == "one long …"
