"""Packet captures (pcap, pcapng): the backend channel."""
