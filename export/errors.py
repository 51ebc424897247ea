from common.errors import UserError


class ExportError(UserError):
    """A problem in export the user can fix; the message says how."""
