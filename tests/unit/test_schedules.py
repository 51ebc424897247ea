"""The learning-rate schedules keep to what their recipes cite (training/recipes.py)."""

from __future__ import annotations

import pytest

from training.config import TrainConfig
from training.optim import LRSchedule, build_schedule
from training.recipes import recipe_settings


def schedule_for(recipe: str, **flags) -> LRSchedule:
    given = {"recipe": recipe, "data": "digits", **flags}
    config = TrainConfig(**recipe_settings(given))
    return build_schedule(config, steps_per_epoch=10, world_size=1)


def rate_in_epoch(schedule: LRSchedule, epoch: int) -> float:
    return schedule.lr_at(epoch * schedule.steps_per_epoch)


def test_the_torchvision_recipe_steps_every_30_epochs_whatever_the_run_length():
    for epochs in (10, 90, 120):
        schedule = schedule_for("torchvision", epochs=epochs)
        rates = [rate_in_epoch(schedule, epoch) for epoch in range(epochs)]
        base = schedule.base_lr
        assert rates == pytest.approx([base * 0.1 ** (epoch // 30) for epoch in range(epochs)]), epochs


def test_lr_step_epochs_overrides_the_recipes_period():
    schedule = schedule_for("torchvision", epochs=12, lr_step_epochs=4)
    assert [rate_in_epoch(schedule, e) / schedule.base_lr for e in (0, 3, 4, 8)] == pytest.approx(
        [1, 1, 0.1, 0.01]
    )


def test_the_paper_recipe_divides_on_plateaus_at_most_three_times():
    schedule = schedule_for("paper")
    assert schedule.kind == "plateau" and schedule.max_drops == 3
    schedule.end_of_epoch(0.5)
    for _ in range(20):  # twenty epochs without improvement: ten plateaus of two epochs
        schedule.end_of_epoch(0.4)
    assert rate_in_epoch(schedule, 21) == pytest.approx(schedule.base_lr * 1e-3)


def test_plateau_drops_survive_a_resume_and_so_does_the_limit():
    schedule = LRSchedule("plateau", 0.1, steps_per_epoch=10, epochs=30, warmup_epochs=0, max_drops=2)
    for top1 in (0.5, 0.4, 0.4):
        schedule.end_of_epoch(top1)
    resumed = LRSchedule("plateau", 0.1, steps_per_epoch=10, epochs=30, warmup_epochs=0, max_drops=2)
    resumed.load_state_dict(schedule.state_dict())
    for _ in range(10):
        resumed.end_of_epoch(0.4)
    assert resumed.drops == 2 and resumed.lr_at(0) == pytest.approx(0.001)
    # A checkpoint written before drops were counted: its scale says how many there were.
    old = {key: value for key, value in schedule.state_dict().items() if key != "drops"}
    resumed.load_state_dict(old)
    assert resumed.drops == 1
