"""The settlement ledger: what Octopus billed per half-hour, and how often the signal agreed.

Everything in this package is pure (no I/O): parsing the measurements response, reconciling it
with the published signals, and rendering. The store and the Kraken client sit at its edges.
"""
