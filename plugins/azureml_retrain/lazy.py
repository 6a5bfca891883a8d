"""``cached_property`` without the class-wide lock of Python 3.11's ``functools.cached_property``.

Up to Python 3.11, ``functools.cached_property`` computes under one lock per class attribute: when
many triggers share a triggerer's thread pool, each first use of a hook's connection or a storage
client (a round trip to fetch the connection) waits for every other instance's. This one keeps the
value per instance and takes no lock; two threads reading the same new instance at once may both
compute it, which is harmless for the connection lookups and clients it holds here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached_property(Generic[T]):
    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.attrname: str | None = None
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.attrname = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_property[T]:
        if instance is None:
            return self
        if self.attrname is None:
            raise TypeError("cached_property needs __set_name__: assign it in a class body")
        value = self.func(instance)
        # The instance attribute now wins over this (non-data) descriptor: computed once.
        instance.__dict__[self.attrname] = value
        return value
