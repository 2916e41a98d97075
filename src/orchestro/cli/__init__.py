"""The ``orchestro`` command line."""
