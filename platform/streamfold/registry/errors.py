"""The registry's errors, each with the HTTP status and Confluent error code it is answered with.

Clients of a Confluent registry branch on ``error_code``, so the codes are the contract:

=======  ======  ====================================================================
status   code    meaning
=======  ======  ====================================================================
400      400     the request body is not JSON, or not the shape the call expects
401      40101   missing or wrong credentials (basic auth)
404      40401   subject not found
404      40402   version not found
404      40403   schema not found
404      40404   subject was soft-deleted (soft delete again)
404      40405   subject not soft-deleted before a permanent delete
404      40406   version was soft-deleted (soft delete again)
404      40407   version not soft-deleted before a permanent delete
404      40408   subject has no compatibility level of its own
404      40409   subject has no mode of its own
409      409     schema incompatible with the subject's earlier versions
422      42201   invalid schema (does not parse, unsupported type, bad reference)
422      42202   invalid version (not a positive integer, ``latest`` or ``-1``)
422      42203   invalid compatibility level
422      42204   invalid mode
422      42205   operation not permitted (read-only mode, id given outside IMPORT, ...)
422      42206   the schema is referenced by another schema and cannot be deleted
500      50001   the log could not be written
500      50002   the operation timed out waiting for the log
=======  ======  ====================================================================
"""

from __future__ import annotations

from streamfold.errors import PermanentError, RetryableError

__all__ = [
    "RegistryApiError",
    "RegistryStoreError",
]


class RegistryApiError(PermanentError):
    """A request the registry refuses: answered with ``status`` and Confluent ``code``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        """The Confluent error body."""
        return {"error_code": self.code, "message": self.message}


class RegistryStoreError(RetryableError):
    """The registry's Kafka log failed or timed out; the request may be retried."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.status = 500
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        """The Confluent error body."""
        return {"error_code": self.code, "message": self.message}


def subject_not_found(subject: str) -> RegistryApiError:
    return RegistryApiError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryApiError:
    return RegistryApiError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryApiError:
    return RegistryApiError(404, 40403, detail)


def invalid_schema(detail: str) -> RegistryApiError:
    return RegistryApiError(422, 42201, f"Invalid schema: {detail}")


def invalid_version(version: object) -> RegistryApiError:
    return RegistryApiError(
        422,
        42202,
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        'between [1, 2^31-1] and the string "latest"',
    )


def not_permitted(detail: str) -> RegistryApiError:
    return RegistryApiError(422, 42205, detail)


def bad_request(detail: str) -> RegistryApiError:
    return RegistryApiError(400, 400, detail)
