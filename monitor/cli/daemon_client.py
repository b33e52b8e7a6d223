"""How the command line reaches the running daemon: its base URL and the bearer token, from the
same config the daemon runs on (``http.listen``, ``http.token``)."""

from __future__ import annotations

from monitor.config.model import Config


def daemon_url(config: Config) -> str:
    """The base URL of this config's running daemon (a wildcard listen is reached on loopback).

    >>> daemon_url(Config.model_validate({"accounts": [{"name": "a", "api_key": "k", "api_secret": "s"}],
    ...     "notify": {"routes": {"r": {"urls": ["json://x"]}}}, "http": {"listen": "0.0.0.0:9108"}}))
    'http://127.0.0.1:9108'
    """
    host = config.http.host if config.http.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.http.port}"


def daemon_headers(config: Config) -> dict[str, str]:
    """The ``Authorization`` header when the config has ``http.token``."""
    return {"Authorization": f"Bearer {config.http.token.get_secret_value()}"} if config.http.token else {}
