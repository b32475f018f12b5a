"""The `streamgen` command-line application (installed as `streamgen.cli`)."""
