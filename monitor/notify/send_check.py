"""``test-alert``'s delivery: the route and send stages only (:func:`probe_routes`), no outbox, no
state file, so it works beside a running daemon (which holds the state file's lock). Each send goes
through Apprise directly (:func:`send_once`) and reports per URL, secrets masked, why it failed:
what Apprise logged for that URL (``Failed to send … : Unauthorized - error=401``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import apprise

from monitor.logs import scrub
from monitor.notify.apprise_sink import url_scheme
from monitor.notify.console import console, is_console
from monitor.notify.messages import Message
from monitor.notify.plugins import prepare
from monitor.notify.route import NotifyRoute, RouteStage
from monitor.notify.send import SendStage

PROBE_GRACE = 5.0  # the send stage's bound beyond the timeout: send_once answers within its own


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


class ProbeSender:
    """A sender for the send stage that keeps what :func:`send_once` found, per URL."""

    def __init__(self) -> None:
        self.outcomes: dict[str, SendOutcome] = {}

    async def __call__(self, url: str, title: str, body: str, notify_type: str, seconds: float) -> bool:
        outcome = await send_once(url, Message(title, body, notify_type), timeout=seconds)
        self.outcomes[url] = outcome
        return outcome.ok


async def probe_routes(
    routes: Mapping[str, NotifyRoute],
    message: Message,
    *,
    timeout: float,  # noqa: ASYNC109
) -> AsyncIterator[tuple[str, int, SendOutcome]]:
    """Send ``message`` to every URL of every route, one after the other, in config order: yields
    (route, URL position from 1, outcome) as each send ends."""
    route = RouteStage(routes)
    sender = ProbeSender()
    send = SendStage(sender, timeout=timeout, grace=PROBE_GRACE)
    for name in route.routes:
        for position, target in enumerate(route.targets(name), start=1):
            await send.attempt(target, message.title, message.body, message.notify_type)
            outcome = sender.outcomes.pop(target.url, None)
            if outcome is None:  # the send stage's own bound ended it
                outcome = SendOutcome(False, f"{target.scheme}://…", f"no answer within {timeout:g} s")
            yield name, position, outcome
