"""``python -m training plot``: loss and validation AP of several runs on one figure, the logged numbers plotted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import training.plots

RUNS = {
    "run_a": ([{"iteration": i, "lr": 0.01, "loss": 2.0 / i, "loss_cls": 1.0 / i, "loss_box_reg": 1.0 / i}
               for i in (1, 2, 3, 4)],
              [{"epoch": 1, "iteration": 2, "AP": 0.1, "AP50": 0.2}, {"epoch": 2, "iteration": 4, "AP": 0.15,
                                                                        "AP50": 0.3}]),
    "run_b": ([{"iteration": i, "lr": 0.02, "loss": 3.0 - i / 10, "loss_cls": 2.0 - i / 10} for i in (10, 20)], []),
}


def _write_runs(root: Path) -> list[Path]:
    dirs = []
    for name, (metrics, val) in RUNS.items():
        run = root / name
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics) + '{"iteration": 5, "lo')
        if val:
            (run / "val_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
        dirs.append(run)
    return dirs


def test_plot_writes_the_logged_numbers(tmp_path: Path, monkeypatch) -> None:
    figures = []
    save = training.plots._save
    monkeypatch.setattr(training.plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    dirs = _write_runs(tmp_path)
    out = tmp_path / "fig" / "runs.png"
    assert training.plots.plot_runs(dirs, out) == out and out.stat().st_size > 0
    plotted = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
               for ax in figures[0].axes for line in ax.lines}
    expected = {}
    for name, (metrics, val) in RUNS.items():
        for rows, keys in ((metrics, [k for k in metrics[0] if k.startswith("loss")]), (val, ["AP", "AP50"])):
            for key in keys if rows else []:
                expected[f"{name} {key}"] = ([r["iteration"] for r in rows], [r[key] for r in rows])
    assert plotted == expected  # the line cut short by a kill is left out


def test_plot_without_logs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        training.plots.plot_runs([tmp_path], tmp_path / "x.png")


def test_cli_writes_the_figure(tmp_path: Path, capsys) -> None:
    from training.cli import main

    out = tmp_path / "runs.png"
    assert main(["plot", *map(str, _write_runs(tmp_path)), "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and f"wrote {out}" in capsys.readouterr().out
