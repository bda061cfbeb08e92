"""Behaviour that needs sysctls changed: run inside a private network
namespace that the test creates, never on the host's settings."""

from tests.support import needs_netns, run_in_netns

pytestmark = needs_netns


def test_autobind_of_another_uid_never_lands_in_a_held_block():
    out = run_in_netns("netns.autobind_of_another_uid")
    tcp = range(out["tcp_block"][0], out["tcp_block"][0] + 10)
    udp = range(out["udp_block"][0], out["udp_block"][0] + 10)
    assert all(40000 <= p <= 40019 for p in list(tcp) + list(udp))
    assert out["tcp_bind0"] and not set(out["tcp_bind0"]) & set(tcp)
    assert out["udp_bind0"] and not set(out["udp_bind0"]) & set(udp)
    assert not set(out["tcp_connect"]) & set(tcp)
    # the range has 20 ports and 10 are held: the other uid runs out
    assert any(e.startswith("tcp_bind0:") for e in out["exhausted"]), out


def test_wildcard_acquire_slides_past_taken_ports():
    out = run_in_netns("netns.wildcard_slides_past_taken_ports")
    start, count = out["block"]
    block = set(range(start, start + count))
    assert 41000 <= start and start + count - 1 <= 41099
    assert not block & set(out["taken"])
    assert "no free block" in out["big"]


def test_wildcard_acquire_skips_ip_local_reserved_ports():
    out = run_in_netns("netns.wildcard_skips_reserved_ports")
    assert out["start"] == 42005


def test_a_port_given_back_while_its_listener_is_still_closing_connects_to_the_next_listener():
    """Regression: release tracking saw a port free as soon as the kernel
    dropped the closing file's epoll item, before the listener's release
    took it out of the port's reuseport group, so a listener bound next in
    another thread could have its connections accepted by the closing one
    and reset (seen as ECONNRESET under load).  The closing listener's
    release is slowed down here by IPv6 anycast memberships (leaving each is
    part of the release; joining needs forwarding on, which is why this
    runs in a private namespace)."""
    out = run_in_netns("netns.closing_listener_port_reused")
    assert out["failures"] == [], out
