"""The running daemon: the supervisor, the per-account agent, the poller and the command runner."""
