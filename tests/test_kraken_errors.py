"""Pure parts of the client: error classification, query documents, token payload parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from graphql import build_schema, parse, validate

import ioagent.simulator
from ioagent.kraken import queries
from ioagent.kraken.errors import (
    ApiChanged,
    AuthFailed,
    CommandRefused,
    KrakenError,
    RateLimited,
    TransientError,
    classify_error,
    field_from_message,
    schema_error,
)
from ioagent.kraken.tokens import jwt_expiry, refresh_expiry, token_from_payload
from ioagent.logs import register_secret

NOW = datetime(2026, 2, 7, 12, 0, tzinfo=UTC)


def _error(code: str | None, **extensions: Any) -> dict[str, Any]:
    ext: dict[str, Any] = {"errorCode": code, **extensions} if code else dict(extensions)
    return {"message": "Something.", "path": ["flexPlannedDispatches"], "extensions": ext}


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("KT-CT-1139", AuthFailed),
        ("KT-CT-1135", AuthFailed),
        ("KT-CT-1124", AuthFailed),
        ("KT-CT-1199", RateLimited),
        ("KT-CT-4340", TransientError),
        ("KT-CT-4341", TransientError),
        ("KT-CT-7899", TransientError),
        ("KT-CT-4313", CommandRefused),
        ("KT-CT-4358", CommandRefused),
        ("KT-CT-4387", CommandRefused),
        ("KT-CT-1188", KrakenError),
        (None, KrakenError),
    ],
)
def test_classify_error(code: str | None, kind: type[KrakenError]) -> None:
    error = classify_error(_error(code))
    assert type(error) is kind
    assert error.code == code
    assert "flexPlannedDispatches" in str(error)


def test_boost_refusal_reasons() -> None:
    error = classify_error(
        _error("KT-CT-4357", boostChargeRefusalReasons=["BC_DEVICE_DISCONNECTED"])
    )
    assert isinstance(error, CommandRefused)
    assert error.reasons == ("BC_DEVICE_DISCONNECTED",)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("Cannot query field 'plannedDispatches' on type 'Query'.", "plannedDispatches"),
        ('Cannot query field "triggerBoostCharge" on type "Mutation".', "triggerBoostCharge"),
        ("Unknown argument 'accountNumber' on field 'Query.x'.", "accountNumber"),
        ("Syntax Error: Unexpected Name.", None),
    ],
)
def test_field_from_message(message: str, field: str | None) -> None:
    assert field_from_message(message) == field


def test_schema_error_names_field() -> None:
    error = schema_error(
        [
            {
                "message": "Cannot query field 'plannedDispatches' on type 'Query'. "
                "Did you mean 'flexPlannedDispatches'?"
            }
        ],
        400,
    )
    assert isinstance(error, ApiChanged)
    assert error.field == "plannedDispatches"
    assert error.code == 400
    assert "'plannedDispatches'" in str(error)


def test_server_text_with_a_secret_is_redacted() -> None:
    secret = "sk_live_errors_test_secret_value"
    register_secret(secret)
    error = classify_error(
        {"message": f"Variable '$input' got invalid value {{'APIKey': '{secret}'}}"}
    )
    assert secret not in str(error)
    assert secret not in repr(error)


def _schema_text() -> str:
    return (Path(ioagent.simulator.__file__).parent / "schema.graphql").read_text()


@pytest.mark.parametrize(
    "document",
    [
        queries.OBTAIN_TOKEN,
        queries.ACCOUNTS,
        queries.DEVICES,
        queries.PLANNED_DISPATCHES,
        queries.COMPLETED_DISPATCHES,
        queries.SET_PREFERENCES,
        queries.UPDATE_BOOST,
        queries.UPDATE_SMART_CONTROL,
        queries.poll_query(0),
        queries.poll_query(3),
    ],
)
def test_documents_match_schema(document: str) -> None:
    assert validate(build_schema(_schema_text()), parse(document)) == []


def test_poll_variables() -> None:
    assert queries.poll_variables("A-1", ["d0", "d1"]) == {
        "account": "A-1",
        "device_0": "d0",
        "device_1": "d1",
    }


def test_jwt_expiry_read_without_verification() -> None:
    exp = NOW + timedelta(minutes=60)
    token = jwt.encode({"exp": int(exp.timestamp())}, "a-key-we-do-not-have-000000000000", "HS256")
    assert jwt_expiry(token, NOW) == exp


def test_jwt_without_exp_gets_a_conservative_lifetime() -> None:
    assert jwt_expiry("not-a-jwt", NOW) == NOW + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (int((NOW + timedelta(days=7)).timestamp()), NOW + timedelta(days=7)),
        (3600, NOW + timedelta(hours=1)),
        (None, None),
        ("soon", None),
        (True, None),
    ],
)
def test_refresh_expiry(value: Any, expected: datetime | None) -> None:
    assert refresh_expiry(value, NOW) == expected


def test_token_repr_hides_secrets() -> None:
    token = token_from_payload(
        {"token": "eyJ.payload.signature-abcdef", "refreshToken": "refresh-secret-abcdef"}, NOW
    )
    assert "eyJ" not in repr(token)
    assert "refresh-secret" not in repr(token)
    assert token.refresh_expires_at is None


def test_token_payload_without_token_is_an_error() -> None:
    with pytest.raises(KrakenError):
        token_from_payload({"token": None}, NOW)


# --- errorDescription, KT-CT-1113, refusal reasons ------------------------------------------


@pytest.mark.parametrize(
    ("message", "description", "text"),
    [
        ("Invalid data.", "Authentication failed.", "Invalid data. Authentication failed."),
        ("Unable to suspend", "Try later.", "Unable to suspend: Try later."),
        ("Too many requests.", "Too many requests.", "Too many requests."),
        ("The Kraken Token has expired.", "", "The Kraken Token has expired."),
        ("Unauthorized.", None, "Unauthorized."),
    ],
)
def test_messages_carry_the_error_description(
    message: str, description: str | None, text: str
) -> None:
    extensions: dict[str, Any] = {"errorCode": "KT-CT-1139"}
    if description is not None:
        extensions["errorDescription"] = description
    error = classify_error({"message": message, "extensions": extensions})
    assert str(error).endswith(f"KT-CT-1139: {text}")
    assert error.description == (description or None)


def test_disabled_field_is_an_api_change() -> None:
    error = classify_error(
        {
            "message": "Disabled GraphQL field requested.",
            "path": ["completedDispatches"],
            "extensions": {"errorCode": "KT-CT-1113"},
        }
    )
    assert isinstance(error, ApiChanged)
    assert error.field == "completedDispatches"
    assert "KT-CT-1113" in str(error)


@pytest.mark.parametrize(
    ("code", "reasons", "expected"),
    [
        ("KT-CT-4357", ["BC_DEVICE_NOT_AT_HOME"], ("BC_DEVICE_NOT_AT_HOME",)),
        ("KT-CT-4357", "BC_DEVICE_DISCONNECTED", ("BC_DEVICE_DISCONNECTED",)),
        ("KT-CT-4399", ["BC_DEVICE_RETIRED", None], ("BC_DEVICE_RETIRED",)),
        (None, ["BC_DEVICE_SUSPENDED"], ("BC_DEVICE_SUSPENDED",)),
    ],
)
def test_boost_refusal_reasons_are_read_whatever_the_code(
    code: str | None, reasons: Any, expected: tuple[str, ...]
) -> None:
    error = classify_error(_error(code, boostChargeRefusalReasons=reasons))
    assert isinstance(error, CommandRefused)
    assert error.reasons == expected


def test_a_schema_error_carries_the_description() -> None:
    error = schema_error(
        [
            {
                "message": "Invalid data.",
                "extensions": {"errorCode": "KT-CT-1137", "errorDescription": "Wrong fields."},
            }
        ],
        400,
    )
    assert "Invalid data. Wrong fields." in str(error)
    assert error.description == "Wrong fields."
