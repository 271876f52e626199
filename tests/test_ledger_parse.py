"""The measurements parser: every label vocabulary, each quirk, unknown labels (fixtures in
tests/fixtures/ledger/, shapes from the reference)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ioagent.ledger.labels import classify_label
from ioagent.ledger.parse import (
    MeasurementShapeError,
    merge_pages,
    parse_measurements,
    parse_node,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ledger"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("CONSUMPTION_CHARGE_ECO7_DAY_B", ("home standard", "four-rate-v1")),
        ("CONSUMPTION_CHARGE_ECO7_NIGHT_H", ("home low", "four-rate-v1")),
        ("CONSUMPTION_CHARGE_EV_DEVICE_OFF_PEAK_B", ("car low", "four-rate-v1")),
        ("CONSUMPTION_CHARGE_EV_DEVICE_PEAK_P", ("car standard", "four-rate-v1")),
        ("HOME LOW RATE", ("home low", "four-rate-v2")),
        ("HOME STANDARD RATE", ("home standard", "four-rate-v2")),
        ("EV LOW RATE", ("car low", "four-rate-v2")),
        ("EV STANDARD RATE", ("car standard", "four-rate-v2")),
        ("home low rate", ("home low", "four-rate-v2")),
        ("OFF_PEAK", ("home low", "legacy")),
        ("STANDARD_RATE", ("home standard", "legacy")),
        ("CONSUMPTION", ("home flat", "flat")),
    ],
)
def test_every_known_label_names_its_bucket(label: str, expected: tuple[str, str]) -> None:
    kind = classify_label(label)
    assert kind is not None
    assert (kind.name, kind.vocabulary) == expected


@pytest.mark.parametrize(
    "label",
    [
        "",
        "PEAK",  # substring of OFF_PEAK and EV_DEVICE_PEAK: never guessed as either
        "EV",
        "HOME SUPER OFF PEAK RATE",
        "CONSUMPTION_CHARGE_ECO7_DAY",  # no region letter
        "CONSUMPTION_CHARGE_ECO7_DAY_I",  # I is not a GSP letter
        "CONSUMPTION_CHARGE_ECO7_EVENING_B",
        "EV SUPER LOW RATE",
        "STANDING CHARGE",
    ],
)
def test_labels_ioagent_does_not_know_are_refused(label: str) -> None:
    assert classify_label(label) is None


def test_v1_reference_node_home_and_car_low_in_the_daytime() -> None:
    page = parse_measurements(load("v1_page1.json"))
    first = page.half_hours[0]
    assert first.start == at("2026-08-30T12:00:00")  # 13:00 BST, stored in UTC
    assert first.end == at("2026-08-30T12:30:00")
    assert (first.home_band, first.car_band) == ("low", "low")
    assert first.home_kwh == pytest.approx(1.980)
    assert first.car_kwh == pytest.approx(3.296)
    # pence, although costCurrency says GBP: 10.876 + 18.105
    assert first.cost_pence == pytest.approx(28.981)
    assert first.standing_pence == pytest.approx(1.0417)
    assert first.unknown_labels == ()


def test_all_four_buckets_with_zeros_give_the_band_of_the_one_carrying_energy() -> None:
    second = parse_measurements(load("v1_page1.json")).half_hours[1]
    assert second.home_band == "standard"
    # both car buckets came, both zero: Octopus states no car band here
    assert second.car_band == "none"
    assert second.car_kwh == 0.0


def test_cursor_pages_are_reported_and_merge() -> None:
    first = parse_measurements(load("v1_page1.json"))
    assert first.has_next_page is True
    assert first.end_cursor == "YXJyYXljb25uZWN0aW9uOjE="
    second = parse_measurements(load("v1_page2.json"))
    assert second.has_next_page is False
    merged = merge_pages([first, second])
    assert [h.start for h in merged.half_hours] == [
        at("2026-08-30T12:00:00"),
        at("2026-08-30T12:30:00"),
        at("2026-08-31T00:00:00"),
    ]
    night = merged.half_hours[2]
    # region H: car over its allowance in the window pays standard, the home stays low
    assert (night.home_band, night.car_band) == ("low", "standard")
    assert night.cost_pence == pytest.approx(1.648 + 105.35)


def test_v2_labels_the_reference_node_with_only_the_carrying_buckets() -> None:
    page = parse_measurements(load("v2_page.json"))
    ref, evening = page.half_hours
    assert ref.start == at("2026-09-27T02:30:00")
    assert (ref.home_band, ref.car_band) == ("low", "low")
    assert ref.home_kwh == pytest.approx(2.99113)
    assert ref.car_kwh == pytest.approx(3.26387)
    assert ref.cost_pence == pytest.approx(16.43 + 17.93)
    assert ref.standing_pence == pytest.approx(1.0)
    assert (evening.home_band, evening.car_band) == ("standard", "none")
    assert [b.name for b in evening.buckets] == [
        "home low",
        "home standard",
        "car low",
        "car standard",
    ]


def test_legacy_single_label_states_a_band_even_with_zero_energy() -> None:
    window, morning = parse_measurements(load("legacy_page.json")).half_hours
    assert (window.home_band, window.car_band) == ("low", "none")
    assert window.home_kwh == 0.0
    assert (morning.home_band, morning.car_band) == ("standard", "none")
    assert morning.cost_pence == pytest.approx(23.2)
    assert morning.standing_pence == pytest.approx(0.98)


def test_flat_tariff_has_money_but_no_band() -> None:
    (only,) = parse_measurements(load("flat_page.json")).half_hours
    assert (only.home_band, only.car_band) == ("none", "none")
    assert only.buckets[0].name == "home flat"
    assert only.cost_pence == pytest.approx(12.3)


def test_an_unknown_label_keeps_the_half_hour_as_unknown_and_is_reported() -> None:
    page = parse_measurements(load("unknown_label_page.json"))
    unknown, known = page.half_hours
    assert page.unknown_labels == ["HOME SUPER OFF PEAK RATE"]
    assert (unknown.home_band, unknown.car_band) == ("unknown", "unknown")
    assert unknown.unknown_labels == ("HOME SUPER OFF PEAK RATE",)
    # kept, money and all: it was billed
    assert unknown.cost_pence == pytest.approx(1.0)
    assert unknown.buckets[-1].name == "unknown"
    # the next half-hour, all labels known, is parsed normally
    assert (known.home_band, known.car_band) == ("standard", "low")


def test_nodes_without_statistics_are_not_settlements() -> None:
    page = parse_measurements(load("stripped_page.json"))
    assert page.half_hours == []
    assert page.without_statistics == [at("2026-10-06T00:00:00"), at("2026-10-06T00:30:00")]


def test_a_stripped_node_fetched_again_in_a_small_window_is_no_longer_missing() -> None:
    stripped = parse_measurements(load("stripped_page.json"))
    node = load("v1_page2.json")["account"]["properties"][0]["measurements"]["edges"][0]["node"]
    refetched = dict(node, startAt="2026-10-06T01:00:00+01:00", endAt="2026-10-06T01:30:00+01:00")
    again = parse_measurements(
        {"account": {"properties": [{"measurements": {"edges": [{"node": refetched}]}}]}}
    )
    merged = merge_pages([stripped, again])
    assert [h.start for h in merged.half_hours] == [at("2026-10-06T00:00:00")]
    assert merged.without_statistics == [at("2026-10-06T00:30:00")]


def test_both_buckets_carrying_energy_is_split() -> None:
    (only,) = parse_measurements(load("split_page.json")).half_hours
    assert (only.home_band, only.car_band) == ("split", "split")
    assert only.standing_pence == 0.0


def test_a_consumption_cost_row_beside_buckets_is_not_counted_twice() -> None:
    node = load("legacy_page.json")["account"]["properties"][0]["measurements"]["edges"][1]["node"]
    total = {"type": "CONSUMPTION_COST", "label": "", "value": "0.8",
             "costInclTax": {"estimatedAmount": "23.2"}}  # fmt: skip
    statistics = [*node["metaData"]["statistics"], total]
    parsed = parse_node(dict(node, metaData={"statistics": statistics}))
    assert parsed is not None
    assert parsed.cost_pence == pytest.approx(23.2)


def test_consumption_cost_rows_are_used_when_no_buckets_come() -> None:
    node = {
        "startAt": "2026-01-11T06:00:00+00:00",
        "endAt": "2026-01-11T06:30:00+00:00",
        "metaData": {
            "statistics": [
                {
                    "type": "CONSUMPTION_COST",
                    "label": "STANDARD_RATE",
                    "value": "0.8",
                    "costInclTax": {"estimatedAmount": "23.2"},
                },
            ]
        },
    }
    parsed = parse_node(node)
    assert parsed is not None
    assert parsed.home_band == "standard"
    assert parsed.cost_pence == pytest.approx(23.2)


@pytest.mark.parametrize(
    "node",
    [
        {"endAt": "2026-01-11T06:30:00+00:00", "metaData": None},
        {"startAt": "2026-01-11T06:00:00+00:00", "endAt": "2026-01-11T07:00:00+00:00"},
    ],
)
def test_a_node_of_the_wrong_shape_is_a_clear_error(node: dict[str, Any]) -> None:
    with pytest.raises(MeasurementShapeError):
        parse_node(node)


def test_a_response_without_account_is_a_clear_error() -> None:
    with pytest.raises(MeasurementShapeError, match="no account"):
        parse_measurements({"account": None})


def test_a_non_numeric_amount_is_a_clear_error() -> None:
    node = load("legacy_page.json")["account"]["properties"][0]["measurements"]["edges"][1]["node"]
    statistics = [dict(node["metaData"]["statistics"][0], value="lots")]
    with pytest.raises(MeasurementShapeError, match="not a number"):
        parse_node(dict(node, metaData={"statistics": statistics}))
