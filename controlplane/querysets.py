"""One lookup for every entity: by the name FEDn gives it (its natural key), else by primary key."""

from typing import ClassVar, TypeVar

from django.core.exceptions import ValidationError
from django.db import models

# The databases' largest integer; a larger primary key names nothing.
MAX_PK = 2**63 - 1

M = TypeVar("M", bound=models.Model)


class NaturalKeyQuerySet(models.QuerySet[M]):
    """A queryset whose `find` takes what an API caller calls a row.

    Subclasses name the natural key fields in `natural_keys`, tried in order; each value is first
    converted as its field would (a uuid field never sees a non-uuid), then an identifier of ASCII
    digits is tried as the primary key. Declare it with `objects = XQuerySet.as_manager()`.
    """

    natural_keys: ClassVar[tuple[str, ...]] = ()

    def find(self, identifier: str) -> M | None:
        """The first row of this queryset named by `identifier`, or None."""
        value = str(identifier)  # callers pass ids read from JSON, which may be numbers
        for name in self.natural_keys:
            try:
                key = self.model._meta.get_field(name).to_python(value)
            except ValidationError:
                continue
            found = self.filter(**{name: key}).first()
            if found is not None:
                return found
        if value.isascii() and value.isdigit() and int(value) <= MAX_PK:
            return self.filter(pk=int(value)).first()
        return None
