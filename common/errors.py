class UserError(Exception):
    """A problem the user can fix; the message says how. `alexnet` prints it as one `error: ...` line and
    exits with status 2. Each stage raises its own subclass, so a message can be caught by stage, but no
    stage re-wraps another's: the message reaches the user as it was written."""
