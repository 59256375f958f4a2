"""Typed errors. Only the CLI turns them into one line of text, a hint and an exit code."""

from __future__ import annotations


class ForensicsError(Exception):
    """An error the user can act on: `str(exc)` says what failed and where, `hint` what to do."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class UsageError(ForensicsError):
    """Wrong arguments or options (exit code 2)."""


class IntakeError(ForensicsError):
    """A bundle or archive member that is refused (hostile, too large, unreadable)."""

    hint = "the archive is broken or hostile; export it again from the charger portal"


class CaseError(ForensicsError):
    """The case database is missing, locked, or of another schema version."""


class RuleError(ForensicsError):
    """A rule file whose header or SQL is invalid; names the file."""


class FormatError(ForensicsError):
    """A manifest, declarative format or catalogue file that does not load; `where` and
    `line` locate it when known."""

    where: str = ""
    line: int | None = None


class ParserGaveUp(Exception):
    """Raised inside a parser after too many consecutive bad records: the file is not this kind."""
