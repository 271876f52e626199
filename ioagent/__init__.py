"""ioagent: Intelligent Octopus dispatches and a whole-house off-peak signal over MQTT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ioagent")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

USER_AGENT = f"ioagent/{__version__}"
