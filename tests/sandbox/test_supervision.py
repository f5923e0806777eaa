from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.client import WorkerSpec, next_backoff
from sandbox.isolation import SandboxSettings

SPEC = WorkerSpec(
    name="m",
    model_dir=Path("m"),
    restart_backoff_initial_s=0.5,
    restart_backoff_max_s=4.0,
    healthy_after_s=30.0,
)


def test_failures_double_the_delay_up_to_the_maximum() -> None:
    delays: list[float] = []
    previous = None
    for _ in range(6):
        previous = next_backoff(SPEC, previous, ready_for_s=None)
        delays.append(previous)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_short_lived_ready_worker_keeps_backing_off() -> None:
    assert next_backoff(SPEC, 2.0, ready_for_s=5.0) == 4.0


def test_a_worker_that_stayed_ready_starts_the_sequence_over() -> None:
    assert next_backoff(SPEC, 4.0, ready_for_s=30.0) == 0.5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("restart_backoff_initial_s", 0.0),
        ("restart_backoff_max_s", 0.1),
        ("start_timeout_s", -1.0),
        ("stop_timeout_s", 0.0),
        ("max_queue", -1),
        ("threads", 0),
        ("name", ""),
    ],
)
def test_spec_refuses_unusable_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"WorkerSpec.{field}"):
        WorkerSpec(**{"name": "m", "model_dir": Path("m"), field: value})  # type: ignore[arg-type]


def test_spec_needs_a_model_dir_exactly_for_transformers() -> None:
    with pytest.raises(ValueError, match=r"WorkerSpec\.model_dir"):
        WorkerSpec(name="m")
    with pytest.raises(ValueError, match=r"WorkerSpec\.model_dir"):
        WorkerSpec(name="m", kind="echo", model_dir=Path("m"))


def test_worker_args_carry_kind_model_dir_and_canaries(tmp_path: Path) -> None:
    canaries = tmp_path / "canaries.txt"
    assert WorkerSpec(name="e", kind="echo", canary_file=canaries).worker_args(7) == [
        "--fd",
        "7",
        "--name",
        "e",
        "--kind",
        "echo",
        "--canaries",
        str(canaries),
        "--max-batch",
        "16",
        "--batch-window-ms",
        "5",
        "--sandbox",
        SandboxSettings().to_json(),
    ]
    one = WorkerSpec(name="e", kind="echo", max_batch=1, batch_window_ms=0.5).worker_args(7)
    assert one[one.index("--max-batch") : one.index("--max-batch") + 4] == [
        "--max-batch",
        "1",
        "--batch-window-ms",
        "0.5",
    ]
    with pytest.raises(ValueError, match="max_batch"):
        WorkerSpec(name="e", kind="echo", max_batch=0)
    spec = WorkerSpec(name="t", model_dir=tmp_path, memory_limit_bytes=2**30, gpus=(1, 0))
    args = spec.worker_args(7)
    assert args[4:8] == ["--kind", "transformers", "--model-dir", str(tmp_path)]
    sent = SandboxSettings.from_json(args[-1])
    assert (sent.memory_limit_bytes, sent.gpus) == (2**30, (1, 0))


def test_spec_checks_the_isolation_limits() -> None:
    with pytest.raises(ValueError, match="memory_limit_bytes"):
        WorkerSpec(name="e", kind="echo", memory_limit_bytes=1024)
