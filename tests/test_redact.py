"""Credentials in data.shards (tokens in URLs, passwords, keys in pipe: commands) never reach
logs, reports or saved files: `redact_shards` and the messages that name shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gandist import cli
from gandist.data.shards import redact_message, redact_shards


@pytest.mark.parametrize(
    ("spec", "redacted"),
    [
        ("https://user:pw@h.com/d/{000..009}.tar?token=abc&v=2", "https://user:***@h.com/d/{000..009}.tar?token=***&v=2"),
        ("https://h.com/x.tar?X-Amz-Credential=AK%2F1&X-Amz-Signature=f00d&X-Amz-Expires=60",
         "https://h.com/x.tar?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=***"),
        ("https://h.com/x.tar?sig=zz&api_key=k&page=3", "https://h.com/x.tar?sig=***&api_key=***&page=3"),
        ("pipe:curl -s -L -H 'Authorization: Bearer s3cr3t' https://h/x.tar",
         "pipe:curl -s -L -H 'Authorization: ***' https://h/x.tar"),
        ('pipe:curl -sH "X-Api-Key: k1" -u bob:hunter2 https://h/x.tar',
         'pipe:curl -sH "X-Api-Key: ***" -u *** https://h/x.tar'),
        ("pipe:AWS_SECRET_ACCESS_KEY=abc aws s3 cp s3://b/x.tar -",
         "pipe:AWS_SECRET_ACCESS_KEY=*** aws s3 cp s3://b/x.tar -"),
        ("pipe:gsutil cat gs://b/x.tar --token=t0k --access-token zzz",
         "pipe:gsutil cat gs://b/x.tar --token=*** --access-token ***"),
        ("/data/train-{000000..000009}.tar::/data/key-frames/x.tar",
         "/data/train-{000000..000009}.tar::/data/key-frames/x.tar"),
        ("pipe:cat /data/my-token-dir/a.tar", "pipe:cat /data/my-token-dir/a.tar"),
        ("a.tar::https://:pw@h/b.tar", "a.tar::https://:***@h/b.tar"),
    ],
)  # fmt: skip
def test_redact_shards_hides_credentials_and_keeps_the_rest(spec: str, redacted: str) -> None:
    assert redact_shards(spec) == redacted
    assert redact_shards(redacted) == redacted  # idempotent


def test_a_pipe_error_quoting_its_command_is_redacted() -> None:
    url = "pipe:API_TOKEN=s3cr3t cat /d/x.tar"
    # What WebDataset's pipe reports when the command fails.
    message = "(('API_TOKEN=s3cr3t cat /d/x.tar',), {'shell': True, 'bufsize': 8192}): exit 1"
    assert redact_message(message, url) == message.replace("s3cr3t", "***")
    assert redact_message(f"{url} key=7: bad", url) == "pipe:API_TOKEN=*** cat /d/x.tar key=7: bad"


def test_verify_reports_name_shards_without_their_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = cli.main(["data", "verify", f"pipe:API_TOKEN=s3cr3t cat {tmp_path}/missing.tar"])
    out = capsys.readouterr()
    assert code == 1 and "API_TOKEN=***" in out.out
    assert "s3cr3t" not in out.out + out.err


def test_a_training_run_records_and_logs_its_shards_without_their_secrets(
    tmp_path: Path, glyph_shards: Path
) -> None:
    import json
    import sys

    from tests.conftest import run, tiny_overrides
    from tests.wandb_log import records

    good = sorted(glyph_shards.glob("*.tar"))[0]
    shards = f"pipe:API_TOKEN=s3cr3t cat {good}::pipe:API_TOKEN=s3cr3t cat {tmp_path}/gone.tar"
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"data.max_bad_fraction": 0.5})
    overrides = [o for o in overrides if not o.startswith("data.shards=")]
    # A wandb service of this process (umask 022), whose token wandb hands to child processes
    # in WANDB_SERVICE: the private run must not let it write its files.
    import wandb

    wandb.setup()
    try:
        result = run(
            [sys.executable, "-m", "gandist.cli", "train", "configs/dcgan.yaml", *overrides,
             f"data.shards={shards}", "train.steps=8"],  # 64 samples: past the good shard's 32
        )  # fmt: skip
    finally:
        wandb.teardown()
    assert "s3cr3t" not in result.stdout + result.stderr
    assert "API_TOKEN=***" in result.stderr  # the missing shard was logged, redacted
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data_shards"] == shards.replace("s3cr3t", "***")
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    configs = [r.config for r in records(wandb_file) if r.HasField("config")]
    assert configs and any("API_TOKEN=***" in str(c) for c in configs)
    for path in run_dir.rglob("*"):  # only config.yaml keeps the spec as given (to rerun it)
        if path.is_file() and path.name != "config.yaml":
            assert b"s3cr3t" not in path.read_bytes(), path
    # ...and, like every file of a run with credentials, only its owner may read it.
    configs = [run_dir / "config.yaml", *run_dir.glob("checkpoints/step-*/config.yaml")]
    assert len(configs) > 1 and all(b"s3cr3t" in p.read_bytes() for p in configs)
    assert {oct(p.stat().st_mode & 0o777) for p in configs} == {"0o600"}
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    readable = [p for p in run_dir.rglob("*") if p.stat().st_mode & 0o077]
    assert not readable, f"files others may read: {readable}"


def test_an_earlier_run_directory_is_closed_when_credentials_arrive(tmp_path: Path) -> None:
    """A run first launched on plain shards, resumed with credentials: its directory and the
    config.yaml files about to hold them stop being readable by others."""
    from gandist.training.config import load_config
    from gandist.training.run_record import keep_credentials_private
    from tests.conftest import ROOT

    dcgan = str(ROOT / "configs/dcgan.yaml")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints/step-00000002").mkdir(parents=True, mode=0o755)
    for path in (run_dir / "config.yaml", run_dir / "checkpoints/step-00000002/config.yaml"):
        path.write_text("data: {}\n")
        path.chmod(0o644)
    run_dir.chmod(0o755)
    plain = load_config(dcgan, [f"output_dir={run_dir}", "data.shards=/d/a.tar"])
    old_umask = os.umask(0o022)
    try:
        assert keep_credentials_private(plain) is False
        assert os.umask(0o022) == 0o022 and oct(run_dir.stat().st_mode & 0o777) == "0o755"
        secret = load_config(
            dcgan,
            [f"output_dir={run_dir}", "data.shards=pipe:API_TOKEN=s3cr3t cat /d/a.tar"],
        )
        assert keep_credentials_private(secret) is True
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(old_umask)
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in run_dir.rglob("config.yaml")} == {"0o600"}
