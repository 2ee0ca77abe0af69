"""What a trial got of its GPUs: whether other processes used them while it ran (NVML).

A training run that shares its GPU with someone else's job trains less in a time budget, like a
CPU-starved one. ``GpuProbe`` asks NVML (the ``nvidia-ml-py`` package, ``pynvml``; the driver's
own library, not ``nvidia-smi`` output parsed by hand) at every sample which compute processes
hold each of the trial's GPUs and, where the driver reports it, how much of the GPU each used.
A process outside the trial's process tree is another user's. Reported, per trial:

- ``gpu_util``: mean utilisation (%) of the trial's GPUs over the samples;
- ``gpu_others``: the most processes of others seen on them at once;
- ``gpu_others_frac``: the share of samples in which others were busy on them (their SM use
  above ``BUSY_SM``% where NVML reports it per process, else merely present).

The trial's GPUs are those ``CUDA_VISIBLE_DEVICES`` names (indices) in its environment, else
all. Without ``pynvml`` or a GPU (the usual case on a laptop or in CI) there is no probe and
nothing is reported: the CPU judgement alone applies.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Mapping
from typing import Any

#: a process of others counts as busy on a GPU above this SM utilisation (%)
BUSY_SM = 5


def _nvml() -> Any | None:
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def visible(env: Mapping[str, str], count: int) -> list[int]:
    """The GPU indices a trial with environment ``env`` may use (UUIDs and MIG names: all)."""
    text = env.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return list(range(count))
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            return list(range(count)) if part else []
        if int(part) < count:
            out.append(int(part))
    return out


class GpuProbe:
    """NVML handles of a trial's GPUs; ``sample(pids)`` records one observation."""

    def __init__(self, nvml: Any, indices: list[int]):
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self.samples = 0
        self.util_sum = 0.0
        self.others_max = 0
        self.busy_samples = 0
        self._seen: dict[int, int] = {}  # handle index -> last per-process timestamp

    @classmethod
    def open(cls, env: Mapping[str, str]) -> GpuProbe | None:
        """A probe of the GPUs ``env`` makes visible, or None without NVML or GPUs."""
        nvml = _nvml()
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
            indices = visible(env, nvml.nvmlDeviceGetCount())
            return cls(nvml, indices) if indices else None
        except nvml.NVMLError:  # no driver, no device: the probe is optional
            return None

    def sample(self, pids: Collection[int]) -> None:
        """One observation; ``pids`` are the trial's process tree now."""
        others, busy, util = 0, False, 0.0
        try:
            for n, handle in enumerate(self.handles):
                util += float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                foreign = {p.pid for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                           if p.pid not in pids}
                others += len(foreign)
                sm = self._sm_use(n, handle)
                if sm is None:
                    busy = busy or bool(foreign)
                else:
                    busy = busy or any(sm.get(pid, 0) > BUSY_SM for pid in foreign)
        except self.nvml.NVMLError:  # a device gone, a driver hiccup: skip this sample
            return
        self.samples += 1
        self.util_sum += util / max(len(self.handles), 1)
        self.others_max = max(self.others_max, others)
        self.busy_samples += busy

    def _sm_use(self, n: int, handle: Any) -> dict[int, int] | None:
        """pid -> SM utilisation (%) since the last sample, or None where NVML has no
        per-process figures (older drivers, some MIG set-ups)."""
        try:
            rows = self.nvml.nvmlDeviceGetProcessUtilization(handle, self._seen.get(n, 0))
        except self.nvml.NVMLError:  # NotSupported, or NotFound (no samples yet)
            return None
        out: dict[int, int] = {}
        for row in rows:
            out[row.pid] = max(out.get(row.pid, 0), int(row.smUtil))
            self._seen[n] = max(self._seen.get(n, 0), int(row.timeStamp))
        return out

    def usage(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {"gpu_util": round(self.util_sum / self.samples, 1),
                "gpu_others": float(self.others_max),
                "gpu_others_frac": round(self.busy_samples / self.samples, 3)}

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:  # already shut down
            pass
