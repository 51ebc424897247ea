from common.errors import UserError


class TrainingError(UserError):
    """A problem in training the user can fix; the message says how."""
