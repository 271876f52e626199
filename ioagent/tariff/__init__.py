"""Tariff: the plan (normalise, diff) and the off-peak rules, as pure functions of ``now``."""
