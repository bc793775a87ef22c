"""Benchmarks of Flask-Tasks beside the libraries users would pick instead (see README.md)."""
