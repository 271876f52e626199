"""GraphQL documents for the device-based Kraken API (see ioagent/simulator/schema.graphql).

Values always travel as variables, never formatted into the query text.
"""

from __future__ import annotations

from collections.abc import Sequence

OBTAIN_TOKEN = """
mutation ObtainKrakenToken($input: ObtainJSONWebTokenInput!) {
  obtainKrakenToken(input: $input) { token refreshToken refreshExpiresIn }
}
"""

ACCOUNTS = """
query Accounts { viewer { accounts { number } } }
"""

DEVICE_FIELDS = """
fragment DeviceFields on SmartFlexDeviceInterface {
  __typename
  id
  provider
  deviceType
  status { current currentState isSuspended }
  preferences {
    mode
    ... on SmartFlexDevicePreferences {
      targetType
      unit
      isChargingDurationCapped
      schedules { dayOfWeek time min max upperLimit }
    }
  }
  ... on SmartFlexVehicle { make model }
  ... on SmartFlexChargePoint { make model }
}
"""

DISPATCH_FIELDS = "start end type energyAddedKwh"
COMPLETED_FIELDS = "start end delta meta { source location }"

DEVICES = (
    """
query Devices($account: String!, $deviceId: String) {
  devices(accountNumber: $account, deviceId: $deviceId) { ...DeviceFields }
}
"""
    + DEVICE_FIELDS
)

PLANNED_DISPATCHES = f"""
query PlannedDispatches($deviceId: String!) {{
  flexPlannedDispatches(deviceId: $deviceId) {{ {DISPATCH_FIELDS} }}
}}
"""

COMPLETED_DISPATCHES = f"""
query CompletedDispatches($account: String!) {{
  completedDispatches(accountNumber: $account) {{ {COMPLETED_FIELDS} }}
}}
"""

SET_PREFERENCES = """
mutation SetDevicePreferences($input: SmartFlexDevicePreferencesInput!) {
  setDevicePreferences(input: $input) { id }
}
"""

UPDATE_BOOST = """
mutation UpdateBoostCharge($input: UpdateBoostChargeInput) {
  updateBoostCharge(input: $input) { id }
}
"""

UPDATE_SMART_CONTROL = """
mutation UpdateDeviceSmartControl($input: SmartControlInput!) {
  updateDeviceSmartControl(input: $input) { id }
}
"""

POLL_DEVICES_KEY = "devices"
POLL_COMPLETED_KEY = "completedDispatches"


def planned_key(index: int) -> str:
    """Response key (alias) of the index-th device's planned dispatches in :func:`poll_query`."""
    return f"planned_{index}"


def planned_variable(index: int) -> str:
    return f"device_{index}"


def poll_query(device_count: int) -> str:
    """Devices, every device's planned dispatches and the completed ones in one request."""
    params = "".join(f", ${planned_variable(i)}: String!" for i in range(device_count))
    planned = "".join(
        f"  {planned_key(i)}: flexPlannedDispatches(deviceId: ${planned_variable(i)}) "
        f"{{ {DISPATCH_FIELDS} }}\n"
        for i in range(device_count)
    )
    return (
        f"query Poll($account: String!{params}) {{\n"
        f"  {POLL_DEVICES_KEY}: devices(accountNumber: $account) {{ ...DeviceFields }}\n"
        f"{planned}"
        f"  {POLL_COMPLETED_KEY}: completedDispatches(accountNumber: $account) "
        f"{{ {COMPLETED_FIELDS} }}\n"
        "}\n" + DEVICE_FIELDS
    )


def poll_variables(account: str, device_ids: Sequence[str]) -> dict[str, str]:
    variables = {"account": account}
    for index, device_id in enumerate(device_ids):
        variables[planned_variable(index)] = device_id
    return variables


# --- the settlement ledger (issue 16): kept in its own block ----------------------------------

MEASUREMENTS = """
query Measurements(
  $account: String!
  $first: Int!
  $after: String
  $startAt: DateTime
  $endAt: DateTime
  $timezone: String
  $utilityFilters: [UtilityFiltersInput!]
) {
  account(accountNumber: $account) {
    properties {
      measurements(
        first: $first
        after: $after
        startAt: $startAt
        endAt: $endAt
        timezone: $timezone
        utilityFilters: $utilityFilters
      ) {
        edges {
          node {
            value
            unit
            ... on IntervalMeasurementType { startAt endAt }
            metaData {
              statistics {
                type
                label
                value
                costInclTax { estimatedAmount costCurrency pricePerUnit { amount } }
                costExclTax { estimatedAmount costCurrency pricePerUnit { amount } }
              }
            }
          }
        }
        pageInfo { hasNextPage endCursor }
      }
    }
  }
}
"""
MEASUREMENTS_PAGE_SIZE = 500
"""``first``: a 12-half-hour window fits in one page; the cursor is followed all the same."""


def measurements_variables(
    account: str, mpan: str, start_at: str, end_at: str, after: str | None, first: int
) -> dict[str, object]:
    """Half-hourly import readings of one MPAN, with their cost statistics."""
    return {
        "account": account,
        "first": first,
        "after": after,
        "startAt": start_at,
        "endAt": end_at,
        "timezone": "Europe/London",
        "utilityFilters": [
            {
                "electricityFilters": {
                    "readingFrequencyType": "THIRTY_MIN_INTERVAL",
                    "marketSupplyPointId": mpan,
                    "readingDirection": "CONSUMPTION",
                }
            }
        ],
    }


# --- the account's product (issue 15): kept in its own block -----------------------------------

AGREEMENTS = """
query Agreements($account: String!) {
  account(accountNumber: $account) {
    electricityAgreements(active: true) {
      validFrom
      validTo
      meterPoint { mpan }
      tariff { ... on TariffType { productCode tariffCode } }
    }
  }
}
"""
