"""A wildcard acquire that fails because TIME_WAIT sockets crowd the
ephemeral range says so (inside a private network namespace: the test
narrows ip_local_port_range there)."""

from tests.support import needs_netns, run_in_netns


@needs_netns
def test_no_free_block_error_counts_time_wait_sockets():
    out = run_in_netns("outbound.time_wait_crowds_the_range")
    assert out["before"] == "ok"  # the empty range had room for 20
    assert out["counted"] == 12
    msg = out["after"]["msg"]
    assert out["after"]["errno"] == 98, out  # EADDRINUSE
    assert "no free block of that size in the ephemeral port range" in msg
    assert "12 sockets in TIME_WAIT in the range 42000-42019" in msg, msg
    assert out["udp"] == "ok"  # UDP has no TIME_WAIT: its range is free


@needs_netns
def test_no_free_block_without_time_wait_says_nothing_about_it():
    out = run_in_netns("outbound.no_time_wait_in_a_full_range")
    assert "no free block of that size" in out["msg"]
    assert "TIME_WAIT" not in out["msg"]


def test_the_note_counts_only_time_wait_in_the_range(monkeypatch):
    # the wording and the filter, with port_sockets' tuples stood in for
    # (family, Linux TCP state, port, owner, inode); runs on every platform
    from portres import _timewait

    rows = [(2, 6, 50000, 0, 0), (10, 6, 50001, 0, 0), (2, 1, 50002, 0, 9), (2, 10, 50003, 0, 9)]
    monkeypatch.setattr(_timewait._portres, "port_sockets", lambda proto, lo, hi: rows)
    monkeypatch.setattr(_timewait, "ephemeral_range", lambda: (49152, 65535))
    note = _timewait.time_wait_note("tcp")
    assert note is not None and note.startswith("2 sockets in TIME_WAIT in ")
    assert "49152-65535" in note
    assert _timewait.time_wait_note("udp") is None
    monkeypatch.setattr(_timewait._portres, "port_sockets", lambda proto, lo, hi: rows[2:])
    assert _timewait.time_wait_note("tcp") is None
