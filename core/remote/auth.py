"""The bearer token of ``stylecam serve`` and the rule for where the server may listen.

The token is a secret: it is read from a file (never a command-line argument, which other users
of the machine can see in the process list), compared in constant time, and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket

#: A token shorter than this is refused: it could be guessed.
MIN_TOKEN_LENGTH = 16
#: A token file larger than this is not a token file.
MAX_TOKEN_FILE = 4096


class TokenError(ValueError):
    """The token file is missing, unreadable or unusable; the message says which and what to do."""


def read_token(path: str | os.PathLike) -> str:
    """The token in ``path``: its first line, without surrounding blanks."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_FILE + 1)
    except FileNotFoundError:
        raise TokenError(f"token file not found: {path}") from None
    except OSError as e:
        raise TokenError(f"cannot read the token file {path}: {e.strerror or e}") from None
    if len(data) > MAX_TOKEN_FILE:
        raise TokenError(f"{path} is too large to be a token file (a token is one line)")
    try:
        lines = data.decode("utf-8").strip().splitlines()
    except UnicodeDecodeError:
        raise TokenError(f"{path} is not a text file; put the token on its first line") from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokenError(f"the token in {path} is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                         "(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token`)")
    if any(c.isspace() for c in token):
        raise TokenError(f"the token in {path} contains spaces; a token is one word")
    return token


def new_token() -> str:
    return secrets.token_urlsafe(32)


def bearer_ok(header: str | None, token: str | None) -> bool:
    """True when ``header`` (an ``Authorization`` value) carries ``token``; any header is fine
    when the server has no token. Constant time in the token's content."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """True when ``host`` can only be reached from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:  # a host name: loopback only if every address it names is
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)
