"""``azureml_retrain.lazy.cached_property``: once per instance, and no lock shared between instances."""

from __future__ import annotations

import threading

from azureml_retrain.lazy import cached_property


class Client:
    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.barrier = barrier
        self.computed = 0

    @cached_property
    def connection(self) -> str:
        """The connection."""
        self.computed += 1
        if self.barrier is not None:
            self.barrier.wait(timeout=5)  # returns only if the other instance computes at the same time
        return f"connection {id(self)}"


def test_computes_once_per_instance():
    first, second = Client(), Client()
    assert first.connection == first.connection
    assert first.computed == 1
    assert second.connection != first.connection
    del first.connection  # like functools': deleting the value computes it again
    assert first.connection and first.computed == 2
    assert Client.connection.__doc__ == "The connection."
    assert isinstance(Client.__dict__["connection"], cached_property)


def test_instances_compute_at_the_same_time():
    # functools.cached_property (Python 3.11) holds one lock per class attribute: the second thread
    # would wait for the first, whose barrier would then time out.
    barrier = threading.Barrier(2)
    clients = [Client(barrier), Client(barrier)]
    errors: list[BaseException] = []

    def read(client: Client) -> None:
        try:
            assert client.connection
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert [c.computed for c in clients] == [1, 1]
