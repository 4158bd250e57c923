"""msd_async: an asyncio client for the AWS Elemental MediaStore Data Plane API."""

from __future__ import annotations

from .credentials import Credentials, CredentialsProvider
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all

__version__ = "0.1.0"

__all__ = ["Credentials", "CredentialsProvider", "__version__", *_errors_all]
