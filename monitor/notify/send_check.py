"""One direct send through Apprise, for ``test-alert``: no outbox, no state file, so it works beside
a running daemon (which holds the state file's lock). Reports per URL, secrets masked, why a send
failed: what Apprise logged for that URL (``Failed to send … : Unauthorized - error=401``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import apprise

from monitor.logs import scrub
from monitor.notify.apprise_sink import url_scheme
from monitor.notify.console import console, is_console
from monitor.notify.messages import Message
from monitor.notify.plugins import prepare


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """``masked``: the URL as Apprise prints it with privacy on (passwords and tokens hidden)."""

    ok: bool
    masked: str
    reason: str = ""


def _secret_parts(url: str, masked: str) -> list[str]:
    """Pieces of ``url`` (≥ 6 characters) that the masked form hides: scrubbed from any reason."""
    return [p for p in re.split(r"[/:@?&=#]", url) if len(p) >= 6 and p not in masked]


def _mask(url: str, obj: apprise.Apprise) -> str:
    try:
        text = str(obj[0].url(privacy=True))  # type: ignore[no-untyped-call]
    except Exception:  # an odd plugin: fall back to the scheme alone
        return f"{url_scheme(url)}://…"
    return text.partition("?")[0]


async def send_once(url: str, message: Message, *, timeout: float) -> SendOutcome:  # noqa: ASYNC109
    """Send ``message`` to ``url`` now; never raises."""
    if is_console(url):  # ours, not an Apprise plugin (monitor.notify.console)
        return SendOutcome(console(url, message.title, message.body, message.notify_type), "console://")
    prepare(url_scheme(url))  # only this scheme's Apprise plugin, as the daemon does
    obj = apprise.Apprise()
    if not obj.add(url):
        return SendOutcome(False, f"{url_scheme(url)}://…", "Apprise does not accept this URL (check it)")
    masked = _mask(url, obj)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:  # type: ignore[no-untyped-call]
        try:
            result = await asyncio.wait_for(
                obj.async_notify(body=message.body, title=message.title, notify_type=message.notify_type),
                timeout + 1.0,
            )
            ok, error = bool(result), ""
        except TimeoutError:
            ok, error = False, f"no answer within {timeout:g} s"
        except Exception as exc:  # a plugin's bug: its type, never its text (which may hold the URL)
            ok, error = False, f"{type(exc).__name__} in the {url_scheme(url)} plugin"
        logged = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    if ok:
        return SendOutcome(True, masked)
    reason = (
        "; ".join(dict.fromkeys([*logged, error] if error else logged))
        or "not delivered (Apprise gave no reason)"
    )
    for part in _secret_parts(url, masked):
        reason = reason.replace(part, "****")
    return SendOutcome(False, masked, scrub(reason))
