"""Control calls for the simulated settled billing (docs/simulator.md):

* ``POST /control/ledger`` ``{"vocabulary": "v1"|"v2"|"legacy", "region": "H",
  "home_bonus": true|false}`` — each key optional; ``home_bonus: false`` is a simulated
  Octopus rule change (the home no longer shares the car's cheap half-hours);
* ``POST /control/ledger/rebill`` ``{"account", "start", "home"?, "car"?}`` — bill that
  half-hour with these bands from now on (a re-bill, as Octopus does days later);
* ``POST /control/ledger/unknown_label`` ``{"account", "start", "label"}`` — that half-hour's
  home bucket carries a label nobody knows (``"label": null`` puts the known one back);
* ``GET /control/ledger`` — the current settings.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ioagent.simulator.control_api import BadRequest, _body, _flag, _ok, _state, _text, _time
from ioagent.simulator.ledger import VOCABULARIES, ledger_settings, mpan_for
from ioagent.timeutil import iso_z

BANDS = ("low", "standard")


def _band(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if value not in BANDS:
        raise BadRequest(f"{key!r} must be one of {', '.join(BANDS)}")
    return str(value)


def _account(request: web.Request, body: dict[str, Any]) -> str:
    account = _text(body, "account")
    if account not in _state(request).accounts:
        raise LookupError(f"account {account} not found")
    return account


async def get_ledger(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    settings = ledger_settings(state)
    return web.json_response(
        {
            "vocabulary": settings.vocabulary,
            "region": settings.region,
            "home_bonus": settings.home_bonus,
            "mpans": {account: mpan_for(state, account) for account in sorted(state.accounts)},
            "rebills": [
                {"account": a, "start": iso_z(s), **bands}
                for (a, s), bands in sorted(settings.rebills.items())
            ],
            "unknown_labels": [
                {"account": a, "start": iso_z(s), "label": label}
                for (a, s), label in sorted(settings.unknown_labels.items())
            ],
        }
    )


async def set_ledger(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    settings = ledger_settings(_state(request))
    if "vocabulary" in body:
        if body["vocabulary"] not in VOCABULARIES:
            raise BadRequest(f"'vocabulary' must be one of {', '.join(VOCABULARIES)}")
        settings.vocabulary = str(body["vocabulary"])
    if "region" in body:
        region = _text(body, "region")
        if len(region) != 1 or region not in "ABCDEFGHJKLMNP":
            raise BadRequest("'region' must be one GSP letter (A-P without I and O)")
        settings.region = region
    if "home_bonus" in body:
        settings.home_bonus = _flag(body, "home_bonus")
    return _ok()


async def rebill(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    account = _account(request, body)
    start = _time(body, "start")
    if start.minute % 30 or start.second or start.microsecond:
        raise BadRequest("'start' must be on a half-hour")
    bands = {k: v for k in ("home", "car") if (v := _band(body, k)) is not None}
    if not bands:
        raise BadRequest("give 'home' and/or 'car' (low or standard)")
    ledger_settings(_state(request)).rebills[(account, start)] = bands
    return _ok()


async def unknown_label(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    account = _account(request, body)
    start = _time(body, "start")
    if start.minute % 30 or start.second or start.microsecond:
        raise BadRequest("'start' must be on a half-hour")
    labels = ledger_settings(_state(request)).unknown_labels
    if body.get("label") is None:  # Octopus fixes its label: the half-hour is re-billed known
        labels.pop((account, start), None)
    else:
        labels[(account, start)] = _text(body, "label")
    return _ok()


def add_ledger_routes(app: web.Application) -> None:
    app.router.add_get("/control/ledger", get_ledger)
    app.router.add_post("/control/ledger", set_ledger)
    app.router.add_post("/control/ledger/rebill", rebill)
    app.router.add_post("/control/ledger/unknown_label", unknown_label)
