"""Devices, budgets and detection: GPU probes are injected fakes; the CPU path runs for real."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from sandbox.inventory import (
    Device,
    GiB,
    GpuInfo,
    Inventory,
    default_cpu_budget,
    detect_inventory,
    meminfo_total_bytes,
    probe_nvml,
    probe_torch,
)


def test_a_gpu_budget_keeps_the_reserve() -> None:
    gpu = Device.gpu(3, 80 * GiB, reserve_fraction=0.1, name="H100")
    assert (gpu.id, gpu.kind, gpu.index, gpu.name) == ("cuda:3", "cuda", 3, "H100")
    assert gpu.budget_bytes == int(80 * GiB * 0.9)
    assert Device.gpu(0, 24 * GiB, reserve_fraction=0.0).budget_bytes == 24 * GiB


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("cuda:0", "cpu", None, 10, 5), "CPU device has id 'cpu'"),
        (("cpu", "cpu", 0, 10, 5), "CPU device has id 'cpu'"),
        (("cuda:1", "cuda", 0, 10, 5), "CUDA device has id 'cuda:N'"),
        (("cuda:-1", "cuda", -1, 10, 5), "CUDA device has id 'cuda:N'"),
        (("tpu:0", "tpu", 0, 10, 5), "kind must be"),
        (("cpu", "cpu", None, 10, 11), "budget_bytes"),
        (("cpu", "cpu", None, 10, -1), "budget_bytes"),
    ],
)
def test_bad_devices_are_refused(args: tuple[str, str, int | None, int, int], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Device(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_a_bad_reserve_fraction_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="reserve fraction"):
        Device.gpu(0, GiB, reserve_fraction=fraction)


def test_an_inventory_orders_gpus_by_index_then_the_cpu() -> None:
    cpu = Device.cpu(64 * GiB, 32 * GiB)
    inventory = Inventory.of(cpu, Device.gpu(2, GiB), Device.gpu(0, GiB))
    assert [d.id for d in inventory.devices] == ["cuda:0", "cuda:2", "cpu"]
    assert [d.id for d in inventory.gpus] == ["cuda:0", "cuda:2"]
    assert inventory.cpu == cpu
    assert inventory.get("cuda:2").index == 2
    with pytest.raises(KeyError):
        inventory.get("cuda:1")
    with pytest.raises(ValueError, match="distinct"):
        Inventory((cpu, cpu))


def test_meminfo_is_parsed(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16314256 kB\nMemFree:         1000 kB\n", encoding="ascii")
    assert meminfo_total_bytes(meminfo) == 16314256 * 1024
    meminfo.write_text("MemFree: 1 kB\n", encoding="ascii")
    with pytest.raises(ConfigError, match="MemTotal"):
        meminfo_total_bytes(meminfo)


def test_without_meminfo_sysconf_answers(tmp_path: Path) -> None:
    assert meminfo_total_bytes(tmp_path / "absent") > 0


def test_this_machine_is_detected_without_crashing() -> None:
    """The real probes, whatever this machine has; the CPU budget defaults to half of MemTotal."""
    inventory = detect_inventory()
    cpu = inventory.cpu
    assert cpu is not None
    assert cpu.total_bytes == meminfo_total_bytes()
    assert cpu.budget_bytes == default_cpu_budget(cpu.total_bytes) == cpu.total_bytes // 2
    assert all(g.budget_bytes < g.total_bytes for g in inventory.gpus)


def test_fake_gpu_probes_give_gpus_with_reserved_budgets() -> None:
    def nvml() -> list[GpuInfo]:
        return [GpuInfo(1, 80 * GiB, "H100"), GpuInfo(0, 24 * GiB, "L4")]

    inventory = detect_inventory(8 * GiB, 0.25, probes=[nvml], cpu_total_bytes=32 * GiB)
    assert [(d.id, d.budget_bytes, d.name) for d in inventory.devices] == [
        ("cuda:0", 18 * GiB, "L4"),
        ("cuda:1", 60 * GiB, "H100"),
        ("cpu", 8 * GiB, "cpu"),
    ]


def test_a_probe_that_cannot_tell_passes_to_the_next_and_the_first_answer_wins() -> None:
    calls: list[str] = []

    def unavailable() -> None:
        calls.append("nvml")

    def torch_probe() -> list[GpuInfo]:
        calls.append("torch")
        return []  # torch answered: no GPU

    def never() -> list[GpuInfo]:
        raise AssertionError("not reached")

    inventory = detect_inventory(GiB, probes=[unavailable, torch_probe, never], cpu_total_bytes=2 * GiB)
    assert calls == ["nvml", "torch"]
    assert [d.id for d in inventory.devices] == ["cpu"]


def test_no_probe_answering_gives_the_cpu_alone() -> None:
    inventory = detect_inventory(probes=[lambda: None], cpu_total_bytes=10 * GiB)
    assert inventory.devices == (Device.cpu(10 * GiB, 5 * GiB),)


@pytest.mark.parametrize(("budget", "fraction"), [(11 * GiB, 0.1), (-1, 0.1), (GiB, 1.0)])
def test_bad_budgets_are_configuration_errors(budget: int, fraction: float) -> None:
    with pytest.raises(ConfigError):
        detect_inventory(budget, fraction, probes=[], cpu_total_bytes=10 * GiB)


class _FakeNvml:
    """The few pynvml calls probe_nvml makes, over a list of (name, total bytes)."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: list[tuple[bytes | str, int]], fail_init: bool = False) -> None:
        self.gpus, self.fail_init, self.shut = gpus, fail_init, False

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes | str:
        return self.gpus[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> object:
        return type("Memory", (), {"total": self.gpus[handle][1]})()


def test_the_nvml_probe_reads_physical_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml([(b"NVIDIA H100", 80 * GiB), ("NVIDIA L4", 24 * GiB)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    assert probe_nvml() == [GpuInfo(0, 80 * GiB, "NVIDIA H100"), GpuInfo(1, 24 * GiB, "NVIDIA L4")]
    assert fake.shut


def test_the_nvml_probe_without_a_driver_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml([], fail_init=True))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    assert probe_nvml() is None


def test_the_nvml_probe_without_pynvml_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert probe_nvml() is None
    assert probe_torch() is None


def test_the_torch_probe_on_a_cpu_build_finds_no_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert probe_torch() == []


class _FakeCuda:
    def __init__(self, totals: list[int]) -> None:
        self.totals = totals

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return len(self.totals)

    def get_device_properties(self, local: int) -> object:
        return type("Props", (), {"total_memory": self.totals[local], "name": f"gpu{local}"})()


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1]),
        ("", [0, 1]),
        ("5,2", [5, 2]),
        ("3, 7 ,9", [3, 7]),
    ],
)
def test_the_torch_probe_maps_local_indices_to_physical_ones(
    monkeypatch: pytest.MonkeyPatch, visible: str | None, expected: list[int]
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "cuda", _FakeCuda([16 * GiB, 24 * GiB]))
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    gpus = probe_torch(env)
    assert gpus is not None
    assert [g.index for g in gpus] == expected
    assert [g.total_bytes for g in gpus] == [16 * GiB, 24 * GiB]


@pytest.mark.parametrize("visible", ["GPU-8f3a1c2e-aaaa", "0"])
def test_the_torch_probe_gives_up_when_it_cannot_map(monkeypatch: pytest.MonkeyPatch, visible: str) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch, "cuda", _FakeCuda([16 * GiB, 24 * GiB]))
    assert probe_torch({"CUDA_VISIBLE_DEVICES": visible}) is None


def test_importing_the_module_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, sandbox.inventory, sandbox.placement; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
