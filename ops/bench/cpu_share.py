"""CPU seconds each part of the stack used during a bench run: on a small machine the API,
Postgres and Valkey run on the cores the engine needs, so what they use is what the engine lost.
On a shared VM the host also takes time from the cores (steal): counted too, where reported."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

ROLES = ("worker", "api", "postgres", "valkey", "bench client", "other")


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds per process (reaped children included), the machine's idle seconds and the
    seconds the hypervisor ran other guests on its cores (None where the OS does not say)."""

    per_process: dict[int, tuple[str, float]]
    idle_s: float
    stolen_s: float | None


def snapshot(roles: dict[int, str]) -> CpuSnapshot:
    """Every process's CPU seconds so far, labelled by name (postgres, valkey), else with the role
    of the first of itself or its ancestors found in roles, else "other"."""
    per_process: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["name"]):
        try:
            times = proc.cpu_times()
            role = _role(proc, roles)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        used = times.user + times.system + times.children_user + times.children_system
        per_process[proc.pid] = (role, used)
    machine = psutil.cpu_times()
    return CpuSnapshot(per_process, machine.idle, getattr(machine, "steal", None))


def used_between(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each role used between two snapshots, the machine's idle seconds and, where
    reported, the seconds stolen by the host. A process that exited in between is lost unless its
    parent reaped it (then it is counted in the parent's children times)."""
    used = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in after.per_process.items():
        earlier = before.per_process.get(pid)
        used[role] += seconds - (earlier[1] if earlier is not None else 0.0)
    used["idle"] = after.idle_s - before.idle_s
    if before.stolen_s is not None and after.stolen_s is not None:
        used["stolen"] = after.stolen_s - before.stolen_s
    return used


def _role(proc: psutil.Process, roles: dict[int, str]) -> str:
    # By name first: the servers may be children of the bench client.
    name = (proc.info.get("name") or "").lower()
    for known in ("postgres", "valkey"):
        if known in name:
            return known
    for candidate in (proc, *proc.parents()):
        if candidate.pid in roles:
            return roles[candidate.pid]
    return "other"
