"""Changing GPU settings safely: actuator, journal, run lock, safety session, applying caps."""
