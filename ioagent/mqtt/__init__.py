"""MQTT: the broker connection, the topic names, command parsing and Home Assistant discovery."""
