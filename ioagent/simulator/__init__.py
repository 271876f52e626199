"""A local Kraken GraphQL simulator: the subset of Octopus's API that ioagent uses, plus an HTTP
control API to script plug-ins, plans, faults and token expiry for tests, demos and Node-RED
flow authors who do not have an API key yet.
"""
