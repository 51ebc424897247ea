from common.errors import UserError


class DemoError(UserError):
    """A problem in demo the user can fix; the message says how."""
