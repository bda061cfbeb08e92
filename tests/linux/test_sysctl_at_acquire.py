"""Nothing a block does depends on sysctls as they were at import (issue 11,
defect 3): net.ipv6.bindv6only changed after import shapes neither the
placeholders (always dual-stack, IPV6_V6ONLY set explicitly) nor the sockets
portres makes (res.socket(AF_INET6) is dual-stack: the documented default,
docs/platforms.md), and ip_local_port_range / ip_local_reserved_ports are
read when a block is made.  The scenarios run in a private network
namespace (tests/netns_scenarios/sysctl_at_acquire.py)."""

import errno

import pytest

from tests.support import needs_netns, run_in_netns

pytestmark = needs_netns


@pytest.mark.parametrize("before,after", [(0, 1), (1, 0)], ids=["0-then-1", "1-then-0"])
def test_bindv6only_changed_after_import_shapes_nothing(before, after):
    out = run_in_netns("sysctl_at_acquire.bindv6only_changed_after_import", before, after)
    assert out["bindv6only"] == str(after)
    for proto in ("tcp", "udp"):
        assert out[proto + "_foreign_ok"] == [], (
            f"{proto}: another uid binds a held port: {out[proto + '_foreign_ok'][:6]}"
        )
        assert out[proto + "_foreign_ok_after_reuse"] == [], (
            f"{proto}: another uid binds a port given back: {out[proto + '_foreign_ok_after_reuse'][:6]}"
        )
        assert out[proto + "_socket_v6only"] == 0, f"{proto}: res.socket(AF_INET6) is not dual-stack"
        assert out[proto + "_socket_gets_ipv4"] is True, f"{proto}: res.socket(AF_INET6) gets no IPv4"


def test_port_range_and_reserved_ports_read_at_each_acquire():
    out = run_in_netns("sysctl_at_acquire.port_range_and_reserved_ports_read_at_each_acquire")
    start, count = out["a"]
    assert 42000 <= start and start + count - 1 <= 42099
    for start, count in out["blocks"]:
        assert (start, count) == (43008, 8), out["blocks"]
    assert out["nine"] == errno.EADDRINUSE  # 8 free ports left in the range
