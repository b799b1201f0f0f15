"""Stateful stand-ins for outside services, served on localhost for tests."""
