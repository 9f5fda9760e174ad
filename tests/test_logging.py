"""The training files' run folder and logging sinks (utils/runs.py): args.yaml, CSV columns and blanks, W&B offline,
W&B unreachable never stops training."""

import csv
from dataclasses import replace

import pytest
import yaml

from ppo_mjx import Args
from utils.runs import Logger


def test_csv_blanks_for_iterations_without_episodes(tmp_path):
    logger = Logger(tmp_path / "run", Args(seed=7))
    logger.log(0, {"charts/compile_seconds": 3.0}, csv_row=False)
    logger.log(32, {"charts/episodic_return": float("nan"), "losses/policy_loss": 0.5})
    logger.log(64, {"charts/episodic_return": 1.5, "losses/policy_loss": 0.25})
    logger.close()
    assert yaml.safe_load((tmp_path / "run" / "args.yaml").read_text())["seed"] == 7  # the run's settings, first
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert list(rows[0]) == ["global_step", "charts/episodic_return", "losses/policy_loss"]
    assert rows[0]["charts/episodic_return"] == "" and rows[1]["charts/episodic_return"] == "1.5"
    assert [r["global_step"] for r in rows] == ["32", "64"]


def test_wandb_offline_logs(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = Logger(tmp_path, replace(Args(), track=True), resume=True)  # resume: into the existing folder
    assert logger.wandb is not None
    logger.log(32, {"losses/policy_loss": 0.5})
    logger.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    import wandb

    wandb.teardown()  # the next test needs a fresh W&B service with its own settings


def test_wandb_unreachable_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens here
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))  # no stored login
    monkeypatch.setenv("HOME", str(tmp_path))
    logger = Logger(tmp_path, replace(Args(), track=True), resume=True)
    assert logger.wandb is None
    logger.log(32, {"losses/policy_loss": 0.5})
    logger.close()
    out = capsys.readouterr().out
    assert out.count("warning: W&B disabled") == 1
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 2
