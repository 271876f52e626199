"""The GraphQL endpoint: validates against ``schema.graphql``, executes with graphql-core and
answers the way the live Kraken API does (HTTP 400 for schema errors, HTTP 200 with ``errors``
and partial ``data`` otherwise), with queued faults from the control API applied first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    build_schema,
    execute,
    parse,
    validate,
)

from ioagent.aio import wait_event
from ioagent.simulator.ledger import attach_ledger
from ioagent.simulator.planner import LONDON
from ioagent.simulator.state import (
    Fault,
    KrakenError,
    SimCompleted,
    SimDevice,
    SimDispatch,
    SimulatorState,
    TokenGrant,
    authentication_failed,
    unauthorized,
)
from ioagent.simulator.tariffs import agreement_data

SCHEMA_PATH = Path(__file__).with_name("schema.graphql")
AUTH_FIELD = "obtainKrakenToken"
SCHEMA_400_MESSAGE = (
    "Cannot query field 'plannedDispatches' on type 'Query'. Did you mean 'flexPlannedDispatches'?"
)
_HTML_403 = (
    "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
    "<body><h1>403 Forbidden</h1><p>Request blocked. Too many requests from your IP.</p>"
    "<hr><p>Request ID: sim-403</p></body></html>\n"
)
_GATEWAY_PAGES = {
    500: "<html><body><h1>500 Internal Server Error</h1></body></html>\n",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>\n",
    504: "<html><head><title>504 Gateway Time-out</title></head><body><h1>504 Gateway Time-out</h1></body></html>\n",
}


@dataclass
class RequestContext:
    """Per-request facts the resolvers need: who is asking and which faults apply."""

    state: SimulatorState
    authorization: str | None
    fault: Fault | None = None
    account: str | None = None
    """The first account the token sees; the call counters charge the request to it."""
    accounts: tuple[str, ...] = ()
    _auth_error: KrakenError | None = field(default=None, repr=False)
    _authenticated: bool = False

    def require_accounts(self) -> tuple[str, ...]:
        """The accounts the request's token sees; raises the auth error otherwise."""
        if self.fault is not None and self.fault.kind == "auth_error":
            raise KrakenError("KT-CT-1124", "Signature of the JWT has expired.", "AUTHORIZATION")
        if not self._authenticated:
            self._authenticated = True
            try:
                self.accounts = self.state.authenticate_all(self.authorization)
                self.account = self.accounts[0]
            except KrakenError as exc:
                self._auth_error = exc
        if self._auth_error is not None:
            raise self._auth_error
        return self.accounts

    def require_access(self, account_number: str) -> None:
        if account_number not in self.require_accounts():
            raise unauthorized()

    def field_fault(self, field_name: str) -> KrakenError | None:
        fault = self.fault
        if fault is None:
            return None
        if fault.kind == "rate_limit" and (field_name != AUTH_FIELD or fault.include_auth):
            return KrakenError("KT-CT-1199", "Too many requests.", "RATE_LIMIT")
        if fault.kind == "kt_4340" and field_name == fault.field:
            return KrakenError(
                "KT-CT-4340", "Unable to fetch planned dispatches.", "SERVICE_AVAILABILITY"
            )
        if fault.kind == "partial" and field_name == fault.field:
            return KrakenError("KT-CT-7899", "An internal error occurred.", "INTERNAL")
        if fault.kind == "disabled_field" and field_name == fault.field:
            # Octopus's documented shape: a code and a message, no description.
            return KrakenError(
                "KT-CT-1113", "Disabled GraphQL field requested.", "VALIDATION", description=None
            )
        return None


Resolver = Callable[..., Any]


def _kraken_field(resolver: Resolver) -> Resolver:
    """Apply the request's field faults, then turn KrakenError into a located GraphQLError."""

    def wrapped(root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
        context: RequestContext = info.context
        try:
            fault = context.field_fault(info.field_name)
            if fault is not None and info.field_name != AUTH_FIELD:
                context.require_accounts()
            if fault is not None:
                raise fault
            return resolver(context, **args)
        except KrakenError as exc:
            raise GraphQLError(exc.message, extensions=exc.extensions()) from None

    return wrapped


# --- wire formats -------------------------------------------------------------------------------


def _kwh_string(value: float | None, places: int) -> str | None:
    if value is None:
        return None
    return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-places)))


def _device_data(device: SimDevice) -> dict[str, Any]:
    preferences = device.preferences
    return {
        "__typename": device.typename,
        "id": device.id,
        "provider": device.provider,
        "deviceType": device.device_type,
        "make": device.make,
        "model": device.model,
        "status": {
            "__typename": (
                "SmartFlexVehicleStatus"
                if device.typename == "SmartFlexVehicle"
                else "SmartFlexDeviceStatus"
            ),
            "current": device.status_current,
            "currentState": device.current_state,
            "isSuspended": device.is_suspended,
        },
        "preferences": {
            "__typename": "SmartFlexDevicePreferences",
            "mode": preferences.mode,
            "targetType": preferences.target_type,
            "unit": preferences.unit,
            "gridExport": preferences.grid_export,
            "isChargingDurationCapped": preferences.charging_duration_capped,
            "schedules": [
                {
                    "dayOfWeek": schedule.day_of_week,
                    "time": schedule.time.strftime("%H:%M:%S"),
                    "min": schedule.min,
                    "max": schedule.max,
                    "upperLimit": schedule.upper_limit,
                }
                for schedule in preferences.schedules
            ],
        },
    }


def _planned_data(item: SimDispatch) -> dict[str, Any]:
    # UTC offsets; a boost started "now" keeps its microseconds, as the live API's do.
    return {
        "start": item.start.isoformat(),
        "end": item.end.isoformat(),
        "type": item.type,
        "energyAddedKwh": _kwh_string(item.kwh, 4),
    }


def _completed_data(item: SimCompleted) -> dict[str, Any]:
    # Completed dispatches come back in local (Europe/London) offsets: +01:00 in summer.
    return {
        "start": item.start.astimezone(LONDON).isoformat(),
        "end": item.end.astimezone(LONDON).isoformat(),
        "delta": f"-{item.kwh:.2f}",
        "meta": {"source": item.source, "location": item.location},
    }


def _token_data(grant: TokenGrant) -> dict[str, Any]:
    return {
        "token": grant.token,
        "refreshToken": grant.refresh_token,
        "refreshExpiresIn": int(grant.refresh_expires_at.timestamp()),
        "payload": json.dumps(grant.payload),
    }


# --- resolvers ----------------------------------------------------------------------------------


def _viewer(context: RequestContext) -> dict[str, Any]:
    return {"accounts": [{"number": n} for n in context.require_accounts()]}


def _devices(
    context: RequestContext, accountNumber: str, deviceId: str | None = None
) -> list[dict[str, Any]]:
    context.require_access(accountNumber)
    return [_device_data(d) for d in context.state.devices_for(accountNumber, deviceId)]


def _flex_planned(context: RequestContext, deviceId: str) -> list[dict[str, Any]]:
    device = context.state.owned_device(context.require_accounts(), deviceId)
    context.state.check_rate_limit(device.account)
    return [_planned_data(item) for item in context.state.planned_for(device)]


def _completed(context: RequestContext, accountNumber: str) -> list[dict[str, Any]]:
    context.require_access(accountNumber)
    return [_completed_data(item) for item in context.state.completed_for(accountNumber)]


def _obtain_token(context: RequestContext, input: dict[str, Any]) -> dict[str, Any]:
    state = context.state
    api_key, refresh_token = input.get("APIKey"), input.get("refreshToken")
    if api_key:
        grant = state.obtain_token_with_key(api_key)
    elif refresh_token:
        grant = state.obtain_token_with_refresh(refresh_token)
    else:
        raise authentication_failed()
    context.account = grant.payload["accounts"][0]
    return _token_data(grant)


def _set_preferences(context: RequestContext, input: dict[str, Any]) -> dict[str, Any]:
    device = context.state.owned_device(context.require_accounts(), input["deviceId"])
    context.state.set_preferences(device, list(input["schedules"]))
    return _device_data(device)


def _boost(context: RequestContext, input: dict[str, Any] | None = None) -> dict[str, Any]:
    if input is None:
        # The argument is nullable in Kraken's schema; without it there is nothing to act on.
        raise KrakenError(
            "KT-CT-1137",
            "Invalid data.",
            description="Please provide the right combination of input fields.",
        )
    device = context.state.owned_device(context.require_accounts(), input["deviceId"])
    if input["action"] == "BOOST":
        context.state.boost(device)
    else:
        context.state.cancel_boost(device)
    return _device_data(device)


def _smart_control(context: RequestContext, input: dict[str, Any]) -> dict[str, Any]:
    device = context.state.owned_device(context.require_accounts(), input["deviceId"])
    if input["action"] == "SUSPEND":
        context.state.suspend(device)
    else:
        context.state.unsuspend(device)
    return _device_data(device)


# --- scalars --------------------------------------------------------------------------------------
# Output values pass through: resolvers hand them the exact strings the live API sends. Input
# values are checked the way Kraken's graphene scalars check them, so a malformed variable is
# refused before any resolver runs (HTTP 400, as a schema error).


def _literal(node: ValueNode, _variables: Any = None) -> Any:
    if isinstance(node, StringValueNode):
        return node.value
    raise GraphQLError("Expected a string literal.")


def _parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise GraphQLError(f"Decimal cannot represent value: {value!r}")
    try:
        parsed = Decimal(str(value).strip())
    except ArithmeticError:
        raise GraphQLError(f"Decimal cannot represent value: {value!r}") from None
    if not parsed.is_finite():
        raise GraphQLError(f"Decimal cannot represent value: {value!r}")
    return parsed


def _parse_time(value: Any) -> str:
    if not isinstance(value, str):
        raise GraphQLError(f"Time cannot represent value: {value!r}")
    try:
        time.fromisoformat(value)
    except ValueError:
        raise GraphQLError(f"Time cannot represent value: {value!r}") from None
    return value


def _parse_datetime(value: Any) -> str:
    if not isinstance(value, str):
        raise GraphQLError(f"DateTime cannot represent value: {value!r}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise GraphQLError(f"DateTime cannot represent value: {value!r}") from None
    return value


def _install_scalar(schema: GraphQLSchema, name: str, parse: Callable[[Any], Any]) -> None:
    scalar = schema.type_map[name]
    assert isinstance(scalar, GraphQLScalarType)

    def parse_literal(node: ValueNode, *_: Any) -> Any:
        return parse(_literal(node))

    # graphql-core 3.2 calls parse_value/parse_literal, 3.3 the coerce_input_* names.
    for attribute, function in (
        ("parse_value", parse),
        ("coerce_input_value", parse),
        ("parse_literal", parse_literal),
        ("coerce_input_literal", parse_literal),
    ):
        setattr(scalar, attribute, function)


def _pass_new_enum_values(schema: GraphQLSchema) -> None:
    """Let the simulator *send* an enum value its schema does not list yet.

    Octopus adds enum values over time (a new device state, a new device type); the live API
    then sends them. Tests emulate that by setting such a value in the state. Input stays
    strict: a request with an unknown enum value is refused as the live API refuses it.
    """
    for graphql_type in schema.type_map.values():
        if not isinstance(graphql_type, GraphQLEnumType) or graphql_type.name.startswith("__"):
            continue
        # graphql-core 3.2 serializes with serialize, 3.3 with coerce_output_value.
        for attribute in ("serialize", "coerce_output_value"):
            strict = getattr(graphql_type, attribute, None)
            if strict is None:
                continue

            def lenient(value: Any, strict: Callable[[Any], Any] = strict) -> Any:
                try:
                    return strict(value)
                except GraphQLError:
                    if isinstance(value, str):
                        return value
                    raise

            setattr(graphql_type, attribute, lenient)


@cache
def kraken_schema() -> GraphQLSchema:
    """The executable schema: the SDL file with this module's resolvers and scalars attached."""
    schema = build_schema(SCHEMA_PATH.read_text(encoding="utf-8"))
    _install_scalar(schema, "Decimal", _parse_decimal)
    _install_scalar(schema, "Time", _parse_time)
    _install_scalar(schema, "DateTime", _parse_datetime)
    _pass_new_enum_values(schema)
    resolvers: dict[str, dict[str, Resolver]] = {
        "Query": {
            "viewer": _viewer,
            "devices": _devices,
            "flexPlannedDispatches": _flex_planned,
            "completedDispatches": _completed,
        },
        "Mutation": {
            "obtainKrakenToken": _obtain_token,
            "setDevicePreferences": _set_preferences,
            "updateBoostCharge": _boost,
            "updateDeviceSmartControl": _smart_control,
        },
    }
    for type_name, fields in resolvers.items():
        root = schema.type_map[type_name]
        assert isinstance(root, GraphQLObjectType)
        for name, resolver in fields.items():
            root.fields[name].resolve = _kraken_field(resolver)
    attach_ledger(schema)
    _attach_agreements(schema)
    return schema


# --- HTTP -----------------------------------------------------------------------------------------


def top_level_fields(document: DocumentNode, operation_name: str | None) -> list[str]:
    """Names (not aliases) of the top-level fields of the operation that will run."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = next(
        (op for op in operations if op.name and op.name.value == operation_name),
        operations[0] if operations else None,
    )
    names: list[str] = []

    def collect(selection_set: SelectionSetNode, depth: int) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    names.append(selection.name.value)
            elif isinstance(selection, InlineFragmentNode) and depth < 10:
                collect(selection.selection_set, depth + 1)
            elif isinstance(selection, FragmentSpreadNode) and depth < 10:
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    collect(fragment.selection_set, depth + 1)

    if chosen is not None:
        collect(chosen.selection_set, 0)
    return names


def _json_errors(status: int, messages: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"errors": messages}, status=status)


STATE_KEY = web.AppKey("simulator_state", SimulatorState)
STOPPING_KEY = web.AppKey("simulator_stopping", asyncio.Event)


async def handle_graphql(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.advance()
    # Octopus counts a request when it arrives, not when a slow answer finally goes out.
    received_at = state.now()
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        state.record_call([], None, 400, at=received_at)
        return _json_errors(400, [{"message": "Must provide query string."}])
    operation_name = body.get("operationName")
    variables = body.get("variables") or None
    try:
        document = parse(body["query"])
    except GraphQLError as exc:
        state.record_call([], None, 400, at=received_at)
        return _json_errors(400, [dict(exc.formatted)])
    fields = top_level_fields(document, operation_name if isinstance(operation_name, str) else None)
    schema = kraken_schema()
    validation_errors = validate(schema, document)
    if validation_errors:
        state.record_call(fields, None, 400, at=received_at)
        return _json_errors(400, [{"message": error.message} for error in validation_errors])

    context = RequestContext(state, request.headers.get("Authorization"))
    context.fault = state.take_fault(fields)
    early = await _apply_transport_fault(request, context.fault)
    if early is not None:
        state.record_call(fields, None, early.status, at=received_at)
        return early
    if context.fault is not None and context.fault.kind == "timeout":
        context.fault = None  # the late answer is an ordinary one

    outcome = execute(
        schema,
        document,
        context_value=context,
        variable_values=variables if isinstance(variables, dict) else None,
        operation_name=operation_name if isinstance(operation_name, str) else None,
    )
    result = outcome if isinstance(outcome, ExecutionResult) else await outcome
    if result.errors and any(not error.path for error in result.errors):
        # Errors that belong to no field (a variable of the wrong type, a missing required
        # input field, an unknown enum value) fail the whole request before it runs, and Kraken
        # (graphene-django) answers those with HTTP 400 and no data, like a schema error.
        state.record_call(fields, context.account, 400, at=received_at)
        return _json_errors(400, [dict(error.formatted) for error in result.errors])
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    state.record_call(fields, context.account, 200, at=received_at)
    return web.json_response(payload)


async def _apply_transport_fault(
    request: web.Request, fault: Fault | None
) -> web.StreamResponse | None:
    """An HTTP-level answer for faults that replace the whole response; None to carry on."""
    if fault is None:
        return None
    if fault.kind in ("http_500", "http_502", "http_504"):
        status = int(fault.kind.removeprefix("http_"))
        return web.Response(status=status, text=_GATEWAY_PAGES[status], content_type="text/html")
    if fault.kind == "html_403":
        return web.Response(status=403, text=_HTML_403, content_type="text/html")
    if fault.kind == "schema_400":
        return _json_errors(400, [{"message": SCHEMA_400_MESSAGE}])
    if fault.kind == "timeout":
        stopping = request.app[STOPPING_KEY]
        if not await wait_event(stopping, fault.delay):
            return None
        return web.Response(status=503, text="simulator stopping")
    return None


# --- the account's agreements (issue 15): kept in this separate block -----------------------------


def _account(context: RequestContext, accountNumber: str) -> dict[str, Any]:
    context.require_access(accountNumber)
    return {"number": accountNumber}


def _electricity_agreements(
    root: dict[str, Any], info: GraphQLResolveInfo[Any], active: bool | None = None
) -> list[dict[str, Any]]:
    context: RequestContext = info.context
    state = context.state
    account = str(root["number"])
    now = state.now()
    items = state.tariffs.agreements.get(account, [])
    if active:
        items = state.tariffs.active_for(account, now)
    mpan = state.tariffs.mpans.get(account, "")
    return [agreement_data(item, mpan) for item in items]


def _attach_agreements(schema: GraphQLSchema) -> None:
    query = schema.type_map["Query"]
    assert isinstance(query, GraphQLObjectType)
    query.fields["account"].resolve = _kraken_field(_account)
    account_type = schema.type_map["AccountType"]
    assert isinstance(account_type, GraphQLObjectType)
    account_type.fields["electricityAgreements"].resolve = _electricity_agreements
