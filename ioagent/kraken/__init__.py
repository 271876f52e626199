"""Client for Octopus Energy's Kraken GraphQL API (device-based API only)."""
