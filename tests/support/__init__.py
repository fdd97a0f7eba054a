"""Test doubles that are real servers on 127.0.0.1 (importable from any test as
``support.*``: tests/conftest.py puts tests/ on sys.path)."""
