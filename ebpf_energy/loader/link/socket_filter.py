"""``socket``: a socket filter runs on the packets one socket receives.

There is no link for it: SO_ATTACH_BPF puts the program on a socket the
caller owns, SO_DETACH_BPF (or closing the socket) takes it off. Nothing of
it outlives the socket, so nothing outlives the process.
"""

import socket as _socket

from .. import explain, uapi
from ..errors import AttachError

SO_ATTACH_BPF = uapi.SO_ATTACH_BPF
SO_DETACH_BPF = uapi.SO_DETACH_BPF  # = SO_DETACH_FILTER


class SocketFilter:
    """The program on one socket; ``close()`` detaches it (the socket stays the caller's)."""

    mechanism = "socket_filter"

    def __init__(self, sock, target, wrapped=False):
        self.sock = sock
        self.target = target
        self._wrapped = wrapped  # a socket object made here around the caller's fd: never closes it

    @property
    def fd(self):
        return -1 if self.sock is None else self.sock.fileno()

    def info(self):
        return {"id": None, "type": None, "type_name": "socket_filter", "socket_fd": self.fd}

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None and sock.fileno() >= 0:
            try:
                sock.setsockopt(_socket.SOL_SOCKET, SO_DETACH_BPF, 0)
            except OSError:
                pass  # nothing attached any more
            explain.trace("close", f"detach {self.target}")
        if sock is not None and self._wrapped:
            sock.detach()

    @property
    def closed(self):
        return self.sock is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def attach_socket(prog_fd, sock):
    """SO_ATTACH_BPF of the program on ``sock`` (a socket object or an fd)."""
    wrapped = isinstance(sock, int)
    if wrapped:
        sock = _socket.socket(fileno=sock)
    target = f"socket fd {sock.fileno()}"
    try:
        sock.setsockopt(_socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as e:
        if wrapped:
            sock.detach()
        raise AttachError(f"cannot attach socket filter to {target}: {e.strerror} "
                          "(is the program a socket filter, SEC(\"socket\")?)") from None
    explain.trace("attach", f"SO_ATTACH_BPF prog_fd={prog_fd} on {target}")
    return SocketFilter(sock, target, wrapped)


ETH_P_ALL = 0x0003  # every protocol (linux/if_ether.h)


def attach_packet_socket(prog_fd, interface, ifindex):
    """A packet socket of its own on ``interface`` with the filter on it.
    The filter goes on before the bind, so no packet reaches the socket
    unfiltered; closing the link closes the socket."""
    sock = _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, 0)  # protocol 0: receives nothing until bound
    try:
        attach_socket(prog_fd, sock)
        sock.bind((interface, ETH_P_ALL))
    except OSError as e:
        sock.close()
        raise AttachError(f"cannot bind a packet socket to {interface}: {e.strerror}") from None
    except BaseException:
        sock.close()
        raise
    explain.trace("attach", f"packet socket fd {sock.fileno()} bound to {interface} (ifindex {ifindex}), "
                            "every protocol, both directions")
    return PacketSocketFilter(sock, f"socket filter on {interface}")


class PacketSocketFilter(SocketFilter):
    """A socket filter on a packet socket made here: closing it detaches
    the filter and closes the socket."""

    def close(self):
        sock = self.sock
        super().close()
        if sock is not None:
            sock.close()
