class DemoError(Exception):
    """A problem the user can fix; the message says how. The CLI prints it and exits with status 2."""
