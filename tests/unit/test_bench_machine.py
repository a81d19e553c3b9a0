"""The machine a bench figure was measured on, as its JSON records it and its table names it."""

from __future__ import annotations

import platform

import pytest

from ops.bench.engine import machine_description, machine_label


def test_label_names_the_cpu_generation_a_vm_model_name_hides() -> None:
    machine = {"cpu": "AMD EPYC", "cpu_family": "26", "cpu_model": "2", "cores": 2}
    assert machine_label(machine) == "AMD EPYC family 26 model 2 (2 cores)"


def test_label_of_a_result_recorded_before_the_family_was() -> None:
    assert machine_label({"cpu": "AMD EPYC", "cores": 2}) == "AMD EPYC (2 cores)"


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 /proc/cpuinfo")
def test_description_records_this_cpus_family_and_model() -> None:
    machine = machine_description()
    assert str(machine["cpu_family"]).isdigit() and str(machine["cpu_model"]).isdigit(), machine
