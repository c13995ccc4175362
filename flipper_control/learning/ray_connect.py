"""Joining a Ray cluster, or starting a local instance, with errors that say what went wrong: nothing listening
at the address, or token authentication (Ray 2.60 turns it on whenever it finds a token) without the right token.
"""

from __future__ import annotations

import os
import socket
import sys

__all__ = ["RayConnectionError", "check_reachable", "connection_error", "local_node_ip"]


class RayConnectionError(ValueError):
    """``ray_address`` names no Ray cluster this process can join; the message says the likely cause and what to do.

    A ``ValueError`` because the address (and the token that goes with it) is input: ``flipper`` prints it as one
    line and exits with status 2.
    """


CONNECT_PROBE_TIMEOUT_S = 5.0  # a TCP connect to the head's GCS port before ray.init (which retries for minutes)


def local_node_ip() -> str:
    """The address a local Ray instance advertises: a loopback one, since a local instance never needs another.

    Why not simply 127.0.0.1: on Linux Ray 2.60 replaces 127.0.0.1 and localhost by the address of the route
    towards 8.8.8.8 (a UDP route lookup) and advertises that. Any other 127.x.y.z is taken as given, and Linux
    routes all of 127.0.0.0/8 to the loopback device. Elsewhere (macOS, Windows) Ray keeps 127.0.0.1 for a local
    instance, and 127.0.0.2 may not exist there. Ray's servers still listen on all interfaces either way.
    """
    if sys.platform.startswith("linux"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.2", 0))
            return "127.0.0.2"
        except OSError:  # a loopback device configured with 127.0.0.1 only
            pass
    return "127.0.0.1"


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``HOST:PORT`` address; None for the other forms ray.init takes (auto, ray://...)."""
    if "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str) -> None:
    """Fail fast when nothing accepts a TCP connection at ``address``: ray.init would retry for many minutes
    (20 attempts of up to 40 s each in Ray 2.60) before its bare "Failed to connect to Ray cluster"."""
    host_port = _host_port(address)
    if host_port is None:
        return
    host, port = host_port
    try:
        with socket.create_connection((host, port), timeout=CONNECT_PROBE_TIMEOUT_S):
            return
    except ConnectionRefusedError:
        reason = f"nothing listens on port {port} of {host}"
    except socket.gaierror as exc:
        reason = f"unknown host {host!r} ({exc.strerror})"
    except TimeoutError:
        reason = f"no answer from {host}:{port} within {CONNECT_PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise RayConnectionError(
        f"could not connect to the Ray cluster at {address}: {reason}; check that the address is the head node's "
        f"HOST:PORT (`ray start --head` prints it; the default port is 6379) and that the cluster is running "
        f"(`ray status --address {address}`)")


def _auth_failure(exc: BaseException) -> str | None:
    """What went wrong with token authentication, if anything, judging by ``exc`` and its causes.

    Ray 2.60 raises ``ray.exceptions.AuthenticationError`` itself when this process has no token to send, but
    reports a token the cluster refused only inside the text of ``ConnectionError`` -> ``RuntimeError``
    ("Unauthenticated ... InvalidAuthToken").
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if "no authentication token was found" in text or "file cannot be opened or is empty" in text:
            return "token authentication is on (RAY_AUTH_MODE=token) but this process found no token"
        if type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in text or "Unauthenticated" in text:
            if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
                return "the cluster uses token authentication and this process sent no token (RAY_AUTH_MODE is not 'token')"
            return "the cluster refused this process's authentication token"
        e = e.__cause__ or e.__context__
    return None


def connection_error(address: str, exc: BaseException) -> RayConnectionError:
    """One line naming the likely cause of a failed ``ray.init(address=...)`` and what to do about it."""
    auth = _auth_failure(exc)
    if auth is not None:
        mode_on = os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"
        return RayConnectionError(
            f"could not connect to the Ray cluster at {address}: {auth}; {'' if mode_on else 'set RAY_AUTH_MODE=token and '}"
            "give the cluster's token in RAY_AUTH_TOKEN (or in a file named by RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token); "
            "`ray get-auth-token` on the head node prints it")
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return RayConnectionError(
        f"could not connect to the Ray cluster at {address} ({type(exc).__name__}: {first_line}); check that the "
        f"address is the head node's HOST:PORT and that the cluster is running (`ray status --address {address}`); "
        "if the cluster uses token authentication, set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN")
