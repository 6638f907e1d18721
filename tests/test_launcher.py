"""Where a run's precision comes from (accelerate's rule), and the line that says it."""

from humanfix.launcher import LaunchSettings, precision_source


def test_explicit_precision_wins_then_the_launcher_then_the_default(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert precision_source(None) == "default"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert precision_source(None) == "accelerate launch"
    assert precision_source("no") == "--mixed-precision"


def test_describe_names_precision_processes_and_dynamo():
    one = LaunchSettings("no", "default", 1, "no", "NO")
    assert one.describe() == "precision no (from default), 1 process"
    two = LaunchSettings("bf16", "accelerate launch", 2, "inductor", "MULTI_GPU")
    assert two.describe() == (
        "precision bf16 (from accelerate launch), 2 processes (MULTI_GPU), dynamo inductor (from accelerate launch)"
    )
