"""The generated blocks of the README and the documentation pages equal what the committed
results files give now (no training: ``experiments/readme_report.py`` renders each block from
its ``results.json``), so the text cannot drift from the data; and the rendering itself is what
it claims to be."""
import json
import math

import pytest

from experiments import readme_report
from experiments.common import protocol, report


def test_every_generated_block_matches_the_committed_results():
    drift = readme_report.drift()
    assert not drift, ("README/docs blocks differ from the committed results files; run "
                       "`python experiments/readme_report.py --write` and review the diff:\n"
                       + "\n\n".join(drift.values()))


def test_every_generated_marker_has_a_renderer_and_every_renderer_a_place():
    found = readme_report.locations()
    assert set(found) == set(readme_report.BLOCKS)
    for name, paths in found.items():
        for path in set(paths):
            text = path.read_text()
            begin = f"<!-- generated {name}: {readme_report.command(name)} -->"
            assert text.count(begin) == text.count(f"<!-- end generated {name} -->") == 1, \
                (path, name)


def test_the_checked_files_are_the_readme_and_the_docs_pages():
    files = readme_report.files()
    assert files[0] == readme_report.README
    pages = {p.relative_to(readme_report.DOCS).as_posix() for p in files[1:]}
    assert "results/table1.md" in pages and "results/index.md" in pages
    assert not any(p.startswith("_") for p in pages)          # no build output


def test_readme_is_short_and_links_into_the_docs():
    text = readme_report.README.read_text()
    assert len(text.splitlines()) <= 200
    for target in ("docs/getting_started.md", "docs/results/index.md", "CHANGELOG.md"):
        assert target in text and (readme_report.ROOT / target).exists()


def test_write_and_check_cover_every_copy_of_a_block(tmp_path):
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    for path in (a, b):
        path.write_text(f"x\n<!-- generated vit: {readme_report.command('vit')} -->\nold\n"
                        "<!-- end generated vit -->\n")
    assert set(readme_report.drift([a, b], ["vit"])) == {f"{a} (vit)", f"{b} (vit)"}
    assert readme_report.write([a, b]) == [f"{a} (vit)", f"{b} (vit)"]
    assert readme_report.drift([a, b], ["vit"]) == {}
    assert "table1" in readme_report.drift([a], ["table1"])     # a block no file holds


def test_write_block_keeps_the_markers_and_reads_back(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("intro\n<!-- generated x: python make x -->\nold\n<!-- end generated x -->"
                    "\nrest\n")
    report.write_block(path, "x", "new text\n")
    assert path.read_text() == ("intro\n<!-- generated x: python make x -->\nnew text\n"
                                "<!-- end generated x -->\nrest\n")
    assert report.read_block(path.read_text(), "x") == "new text"
    assert readme_report.drift(path, []) == {}


def test_sample_standard_deviation():
    assert report.sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.2909944487358056)  # n − 1
    assert math.isnan(report.sd([1.0]))
    assert report.pm([1.0, 3.0]) == "2.00 ± 1.41" and report.pm([2.0]) == "2.00"


def _rows(diffs: dict) -> list[dict]:
    """Protocol rows over 4 nets whose ``ref − method`` differences are ``diffs[method]``."""
    base = {"ratio": 0.9, "finetune": "plain", "seed": 0, "pr_achieved": 0.9, "dense_err": 1.0,
            "err_before_ft": 50.0, "random_percentile_before_ft": None,
            "epochs_to_converge": 3, "widths": {"a": 3, "b": 10}}
    rows = []
    for net in range(4):
        rows.append({**base, "method": "ref", "dense_seed": net, "err_after_ft": 2.0})
        for m, d in diffs.items():
            rows.append({**base, "method": m, "dense_seed": net,
                         "err_after_ft": 2.0 - d - 0.01 * (net % 2)})
    return rows


def test_holm_in_both_families():
    # two ratios: each family has one clear difference; over the table's 4 comparisons the
    # weaker one is lost
    rows = _rows({"big": 1.0, "small": 0.02})
    rows += [{**r, "ratio": 0.95} for r in _rows({"big": 1.0, "none": 0.0})]
    summary = report.summarize(rows, "ref")
    by = {(s["ratio"], s["method"]): s["vs_reference"] for s in summary}
    ps = [d["p"] for d in by.values() if d is not None]
    assert [d.get("holm_table") for d in by.values() if d is not None] == report.holm(ps)
    assert by[0.9, "big"]["holm"] and by[0.9, "big"]["holm_table"]
    text = report.sentences(summary, "ref")
    assert "at this ratio and recipe" in text
    assert f"Whole table, Holm's correction over all {len(ps)} comparisons" in text


def test_report_notes_the_schedule_and_the_widths():
    doc = {"config": {"dense_seeds": 4, "seeds": 1, "finetune_lr": 1e-3, "kd_alpha": 0.5,
                      "max_epochs": 30, "patience": 3, "random_subsets": 10,
                      "allocation": "bound", "widths": [8, 10]},
           "rows": _rows({"m": 0.5}), "cpu": "test CPU"}
    text = protocol.report_text(doc, "ref", {})
    # no ft_schedule in the config: the committed files' recipe
    assert "schedule `early_stop`" in text and "0 of 8 runs reached the end" in text
    assert "keeps b (10) whole at every ratio" in text and "| 3/10 |" in text
    assert "sample standard deviation" in text
    doc["config"].update(ft_schedule="anneal", ft_epochs=15)
    assert "schedule `anneal`" in protocol.report_text(doc, "ref", {})


def test_like_for_like_entries_parse():
    assert protocol.parse_entry("pvc+norw") == ("pvc", None, False)
    assert protocol.parse_entry("coreset:sparsity_first") == ("coreset", "sparsity_first", True)
    assert protocol.parse_entry("coreset:sparsity_first+norw") == ("coreset", "sparsity_first",
                                                                  False)
    for entry in protocol.LIKE_FOR_LIKE:
        protocol.parse_entry(entry)


def test_resume_reads_a_pre_issue_33_file_as_early_stop(tmp_path):
    cfg = {"ratios": [0.9], "ft_schedule": "early_stop", "ft_epochs": None}
    (tmp_path / "results.json").write_text(json.dumps({"config": {"ratios": [0.9]},
                                                       "rows": [{"x": 1}]}))
    assert protocol.Rows(tmp_path, cfg, resume=True).rows == [{"x": 1}]
    with pytest.raises(SystemExit):
        protocol.Rows(tmp_path, {**cfg, "ft_schedule": "anneal", "ft_epochs": 15}, resume=True)


def test_anneal_runs_its_whole_budget_and_early_stop_may_not():
    import jax
    import numpy as np

    from jaxprune import data
    from jaxprune.models import LeNet300100

    rng = np.random.default_rng(0)

    def ds(n):
        return data.ArrayDataset(rng.normal(size=(n, 4, 4, 1)).astype(np.float32),
                                 rng.integers(0, 3, n).astype(np.int32), 3, "noise")

    train_ds, val_ds = ds(64), ds(32)
    model = LeNet300100(widths=(8, 4), num_classes=3)
    variables = model.init(jax.random.key(0), train_ds.images[:1])
    kw = dict(recipe="plain", teacher=None, seed=0, patience=1, lr=1e-3, batch_size=32)
    _, best, ran = protocol.finetune(model, variables, train_ds, val_ds, max_epochs=6,
                                     schedule="anneal", ft_epochs=3, **kw)
    assert ran == 3 and 0 <= best <= 3
    _, best, ran = protocol.finetune(model, variables, train_ds, val_ds, max_epochs=6,
                                     schedule="early_stop", **kw)
    assert ran <= 6 and (ran == 6 or ran - best == 1)
    with pytest.raises(ValueError):
        protocol.finetune(model, variables, train_ds, val_ds, max_epochs=6, schedule="anneal",
                          **kw)


def test_budget_chosen_on_the_validation_split_and_kept_on_resume(tmp_path, monkeypatch):
    import argparse

    calls = []

    def fake_finetune(small, params, train_ds, val_ds, **kw):
        calls.append(kw["ft_epochs"])
        return kw["ft_epochs"], 0, kw["ft_epochs"]          # "variables" = the budget

    monkeypatch.setattr(protocol, "finetune", fake_finetune)
    monkeypatch.setattr(protocol, "_pruned", lambda *a, **k: ("small", None, None, {}, {}))
    monkeypatch.setattr(protocol.harness, "error", lambda m, v, ds: abs(v - 10) + 1.0)
    args = argparse.Namespace(ratios=[0.9, 0.95], finetune="both", ft_budgets=[5, 10, 20],
                              allocation="bound", reweight="on", max_epochs=30, patience=3,
                              finetune_lr=1e-3, batch_size=8, kd_alpha=0.5)
    rows = protocol.Rows(tmp_path, {"ft_epochs": "auto"}, resume=False)
    chosen = protocol.choose_budget(args, "model", {0: "dense"}, (None, None, None), rows,
                                    (4, 4, 1), None, "coreset")
    assert chosen == 10 and len(calls) == 3 * 2 * 2          # budgets x ratios x recipes
    saved = json.loads((tmp_path / "results.json").read_text())["ft_budget_search"]
    assert saved["chosen"] == 10 and saved["val_err"]["10"] == 1.0
    again = protocol.Rows(tmp_path, {"ft_epochs": "auto"}, resume=True)
    assert protocol.choose_budget(args, None, {}, None, again, None, None, "coreset") == 10
    doc = {"config": {"ft_schedule": "anneal", "ft_epochs": "auto", "finetune_lr": 1e-3,
                      "kd_alpha": 0.5}, "rows": [], "ft_budget_search": saved}
    assert "10 epochs, chosen among 5, 10, 20 on the validation split" in \
        protocol.schedule_note(doc)


def test_committed_tables_match_their_results_files():
    assert readme_report.table_drift() == []
