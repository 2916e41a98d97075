"""Who is calling, and what they may call."""

from .identity import ANONYMOUS, Caller, IdentityResolver, anonymous, caller_of, fixed_identity

__all__ = ["ANONYMOUS", "Caller", "IdentityResolver", "anonymous", "caller_of", "fixed_identity"]
