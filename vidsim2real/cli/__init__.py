"""Command-line interface: one small module per command; each parses, validates, calls the library."""
