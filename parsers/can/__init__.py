"""CAN logs: the internal channel."""
