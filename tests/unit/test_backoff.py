import random

from common.backoff import Backoff, compute_backoff_s


def test_backoff_grows_exponentially_and_is_capped() -> None:
    rng = random.Random(1)
    ceilings = [min(8.0, 0.5 * 2 ** (n - 1)) for n in range(1, 10)]
    for attempt, ceiling in enumerate(ceilings, start=1):
        samples = [compute_backoff_s(attempt, base_s=0.5, max_s=8.0, rng=rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter reaches near the ceiling


def test_backoff_state_resets_after_success() -> None:
    backoff = Backoff(base_s=1.0, max_s=100.0, rng=random.Random(3))
    for _ in range(5):
        backoff.next_delay_s()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.next_delay_s() <= 1.0
