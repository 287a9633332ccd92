"""Two hosts on one machine: network namespaces, a veth pair shaped with tc, a measured link.

- spec: the link as asked for (bandwidth, RTT, loss) and how to write it
- ns: namespaces (create, run in, sockets in, delete, sweep stale ones)
- shaping: tc on one veth end (tbf; netem where the kernel has it; cls_bpf loss)
- relay: a TCP relay that delays each chunk (the RTT where netem is missing), or just bridges
- probe: measuring a link (RTT, throughput, loss)
- link: TwoHostLink, all of the above put together
"""

from .link import TwoHostLink
from .ns import NetnsError
from .spec import LinkSpec, format_rate

__all__ = ["LinkSpec", "NetnsError", "TwoHostLink", "format_rate"]
