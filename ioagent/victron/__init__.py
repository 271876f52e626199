"""Victron GX: the charge-schedule slots (pure) and the connector to the GX's broker."""
