from common.errors import UserError


class ServingError(UserError):
    """A problem in serving the user can fix; the message says how."""
