"""Persistent reservations on Linux (net.ipv4.ip_local_reserved_ports), run
as root inside a private network namespace each test creates: the host's
settings are never touched.  portres's bookkeeping goes to a temp dir."""

import json

import pytest

from tests.support import linux_persistent, persistent_env, run_in_netns

pytestmark = linux_persistent


@pytest.fixture
def env(tmp_path):
    return persistent_env(tmp_path)


def test_create_lookup_list_bind_delete_round_trip(env):
    out = run_in_netns(
        "persistent.round_trip",
        env=env,
    )
    assert out["token"] == out["looked"] and 0 < out["token"] < 2**64
    assert out["after_create"] == "1000-1002,50000-50009"
    assert [50000, 10] in out["listed"] and [1000, 3] in out["listed"]
    assert [50000, 10] not in out["udp_listed"] and [1000, 3] in out["udp_listed"]
    assert 50000 <= out["port"] <= 50009 and 50000 <= out["port2"] <= 50009
    assert out["port"] != out["port2"]
    assert out["after_delete"] == out["before"] == "1000-1002,50005"
    assert out["gone"][0] == 2 and "no such persistent reservation" in out["gone"][1]


def test_overlaps_are_refused_per_protocol_and_the_bitmap_is_shared(env):
    out = run_in_netns(
        "persistent.overlaps",
        env=env,
    )
    assert out["overlap"][0] == 98 and "overlaps the persistent reservation TCP 40000-40009" in out["overlap"][1]
    assert out["both"] == "40000-40014"
    assert out["after_tcp"] == "40005-40014"
    assert out["end"] == ""


def test_32_concurrent_creators_lose_nothing_and_keep_foreign_entries(env):
    out = run_in_netns(
        "persistent.concurrent_creators",
        env=env,
        timeout=300,
    )
    assert out["tokens"] == out["found"] and len(set(out["tokens"])) == 32
    expected = ["2000", "2002-2004"] + [f"{30000 + 10 * i}-{30004 + 10 * i}" for i in range(32)]
    assert out["kernel"] == ",".join(expected)
    expected_after = ["2000", "2002-2004"] + [f"{30000 + 10 * i}-{30004 + 10 * i}" for i in range(1, 32, 2)]
    assert out["after"] == ",".join(expected_after)


def test_unprivileged_caller_gets_permission_error(env):
    out = run_in_netns(
        "persistent.unprivileged_create",
        env=env,
    )
    assert out["res"].startswith("PermissionError") and "need root" in out["res"]
    assert out["kernel"] == ""


def test_boot_entries_come_back_after_a_simulated_reboot(env):
    out = run_in_netns(
        "persistent.simulated_reboot",
        env=env,
    )
    # 7000 was only set at run time: not kept at boot (issue 12)
    assert "net.ipv4.ip_local_reserved_ports = 46000-46003" in out["conf"]
    assert out["t1b"] and out["lost"]
    assert out["kernel"] == "46000-46003"


def test_writer_killed_mid_edit_is_recovered(env):
    # A journal left by a writer killed after writing the sysctl but before
    # committing its bookkeeping: the next writer rolls it forward; one
    # killed before writing the sysctl: rolled back.
    out = run_in_netns(
        "persistent.writer_killed_mid_edit",
        env=env,
    )
    assert out["status"] == 9
    assert [47000, 3] in out["listed"] and [47100, 3] not in out["listed"]
    assert out["kernel"] == "47000-47002,47200-47202"
    assert out["t47000"]


def test_cli_add_list_lookup_delete_with_json(env):
    out = run_in_netns(
        "persistent.cli_round_trip",
        env=env,
    )
    add = json.loads(out["add"]["out"])
    assert out["add"]["rc"] == 0 and add["start"] == 48000 and add["count"] == 8 and add["token"] > 0
    assert out["add_udp"]["rc"] == 0 and "Reserved UDP ports 48100-48101" in out["add_udp"]["out"]
    assert out["overlap"]["rc"] == 3 and "overlaps" in out["overlap"]["err"]
    listed = json.loads(out["list"]["out"])
    assert {"start": 48000, "count": 8, "token": add["token"]}.items() <= listed[1].items()
    assert listed[0]["start"] == 3000 and listed[0]["source"] == "other"
    assert all(e["protocol"] != "udp" for e in listed)
    assert "48000  48007      8  tcp" in out["list_text"]["out"]
    assert json.loads(out["lookup"]["out"])["token"] == add["token"]
    assert out["lookup_missing"]["rc"] == 1 and "no such persistent reservation" in out["lookup_missing"]["err"]
    assert out["delete"]["rc"] == 0 and json.loads(out["delete"]["out"])["deleted"] is True
    assert out["delete_again"]["rc"] == 1 and json.loads(out["delete_again"]["out"])["errno"] == 2
    assert out["bad"]["rc"] == 2 and "port must be in 0..65535" in out["bad"]["err"]
    assert out["kernel"] == "3000-3001,48100-48101"


def test_cli_check_explains_each_cause(env):
    out = run_in_netns(
        "persistent.cli_check",
        env=env,
    )
    rep = {k: json.loads(v["out"]) for k, v in out.items() if k != "runtime_text"}
    kinds = {k: [r["kind"] for r in v["reasons"]] for k, v in rep.items()}
    assert out["free"]["rc"] == 0 and rep["free"]["can_bind"]
    assert "outside the ephemeral range" in rep["free"]["reasons"][-1]["message"]
    assert "persistent" in kinds["portres_persistent"]
    assert "made by portres" in rep["portres_persistent"]["reasons"][0]["message"]
    assert "not made by portres" in rep["foreign_persistent"]["reasons"][0]["message"]
    assert out["runtime"]["rc"] == 1 and not rep["runtime"]["can_bind"] and "reservation" in kinds["runtime"]
    assert "python" in out["runtime_text"]["out"] and "runtime reservation" in out["runtime_text"]["out"]
    assert out["listener"]["rc"] == 1 and "listener" in kinds["listener"]
    assert out["privileged"]["rc"] == 1 and "privileged" in kinds["privileged"]
    assert "inside the ephemeral range 40000-40999" in rep["ephemeral"]["reasons"][-1]["message"]
