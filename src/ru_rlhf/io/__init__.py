"""Readers and Kedro datasets for the project's own file formats."""
