"""Scenarios of tests/linux/test_contention.py (the harness is
tests/support/contention_lib.py)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from tests.support import contention_lib as cl

from . import sysctl


def autobind(seconds: float, uid: Optional[int], reuseport: bool) -> Dict[str, Any]:
    return cl.autobind_scenario(seconds, uid=uid, reuseport=reuseport)


def pick_race(tries: int) -> List[Dict[str, Any]]:
    sysctl("net.ipv4.ip_local_port_range", "40000 40099")
    return [cl.pick_race("portpicker", tries, 0.002), cl.pick_race("portres", tries, 0.002)]
