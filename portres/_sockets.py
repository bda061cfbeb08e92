"""The vocabulary of the C module's socket rows, shared by both backends.

`_portres.port_sockets` reports TCP states in Linux's numbering
(include/net/tcp_states.h) on both platforms: on Windows the C layer maps
each MIB_TCP_STATE to it (src/portres.h), and one with no Linux counterpart
comes as MIB_STATE_OTHER + its value.  This is the one table of their names.
"""

from __future__ import annotations

import socket

TCP_STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
MIB_STATE_OTHER = 1000


def family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"
