"""The subscription heartbeat (pure, clock injected): when to ping, when to give up."""

from __future__ import annotations

from offload_registry.store.heartbeat import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_connection_is_pinged_after_the_interval_and_only_once() -> None:
    clock = Clock()
    beat = Heartbeat(timeout=0.5, interval=1.0, clock=clock)
    clock.now += 0.99
    assert not beat.due()
    clock.now += 0.01
    assert beat.due()
    beat.sent()
    assert not beat.due() and not beat.dead()


def test_an_unanswered_ping_makes_the_connection_dead_after_the_timeout() -> None:
    clock = Clock()
    beat = Heartbeat(timeout=0.5, interval=1.0, clock=clock)
    clock.now += 1.0
    beat.sent()
    clock.now += 0.49
    assert not beat.dead()
    clock.now += 0.01
    assert beat.dead() and beat.silence() == 1.5


def test_anything_heard_answers_the_ping_and_restarts_the_quiet_period() -> None:
    clock = Clock()
    beat = Heartbeat(timeout=0.5, interval=1.0, clock=clock)
    clock.now += 1.0
    beat.sent()
    clock.now += 0.4
    beat.heard()  # the pong, or any message
    clock.now += 0.9
    assert not beat.dead() and not beat.due()
    clock.now += 0.1
    assert beat.due()


def test_a_busy_connection_is_never_pinged() -> None:
    clock = Clock()
    beat = Heartbeat(timeout=0.5, interval=1.0, clock=clock)
    for _ in range(50):
        clock.now += 0.5
        beat.heard()
        assert not beat.due() and not beat.dead()
