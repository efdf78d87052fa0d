"""The Ray dashboard's address, and how to sign in to it."""

from __future__ import annotations

import os
import subprocess
import sys


def dashboard_sign_in(url: str, tty: bool) -> list[str]:
    """Where the dashboard is and how to get past Ray 2.60's "Authentication Token Required".

    Ray's dashboard asks for the cluster's token (a field, then Submit; it keeps it in a
    cookie). ``ray get-auth-token`` prints it (RAY_AUTH_TOKEN, else the file in
    RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, which ray.init wrote for a local cluster).
    The token itself is printed only to a terminal, never into a log or a pipe.
    """
    address = url if "://" in url else f"http://{url}"
    lines = [f"Ray dashboard  {address}"]
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "disabled":
        return lines + ["               no sign-in: token authentication is off (RAY_AUTH_MODE=disabled)"]
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")  # the venv's, next to this Python
    command = f"{ray_cli} get-auth-token"
    token = _auth_token(ray_cli) if tty else None
    if token:
        return lines + [f"               sign in with the token {token}  (again: {command})"]
    return lines + [f"               sign in with the token that `{command}` prints"]


def _auth_token(ray_cli: str) -> str | None:
    try:
        out = subprocess.run([ray_cli, "get-auth-token"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
