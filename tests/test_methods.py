"""The method table: every merge method has its config, experiment and labels, and validation reads its intervals."""

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import CONFIGS, FAST, make_cfg
from music.config import validate
from music.errors import ConfigError
from music.merging import TaskVector, stack
from music.merging.methods import DATA, METHODS, MergeInputs
from music.run import run
from music.strategies import STRATEGIES


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_its_config_its_experiment_and_its_labels(tmp_path, name):
    method = METHODS[name]
    assert yaml.safe_load((CONFIGS / "merge" / f"{name}.yaml").read_text())["method"] == name
    cfg = make_cfg(tmp_path, tmp_path, f"experiment={name}")
    assert cfg.strategy == "merge" and cfg.merge.method == name
    validate(cfg, STRATEGIES)  # its grids lie in the table's intervals
    assert all(OmegaConf.is_list(cfg.merge[knob]) for knob in method.knobs)  # a grid to search
    assert method.data in DATA and isinstance(method.task_id, bool) and method.paper


def test_a_knob_outside_the_tables_interval_is_refused_naming_it(tmp_path):
    with pytest.raises(
        ConfigError, match=r"merge.ratio=\[0, 0.1\] is not allowed: a non-empty list of numbers in \(0, 1\]"
    ):
        validate(make_cfg(tmp_path, tmp_path, "experiment=pcb", "merge.ratio=[0,0.1]"), STRATEGIES)
    with pytest.raises(ConfigError, match=r"align='ft_classifier' is not allowed: none with merge.method=emr"):
        validate(make_cfg(tmp_path, tmp_path, "experiment=emr", "align=ft_classifier"), STRATEGIES)
    with pytest.raises(ConfigError, match=r"merge.method='adamerging' is not allowed: a method without statistics"):
        validate(make_cfg(tmp_path, tmp_path, "experiment=tangent", "merge=adamerging"), STRATEGIES)


def test_breadcrumbs_rows_are_output_units_also_for_conv_weights():
    vector = TaskVector(
        {"conv.weight": torch.zeros(4, 2, 3, 3), "conv.bias": torch.zeros(4), "fc.weight": torch.zeros(3, 5)}
    )
    inputs = MergeInputs(vectors=[vector], tau=stack([vector]))
    assert inputs.sizes() == [72, 4, 15]
    assert inputs.sizes(rows=True) == [18] * 4 + [4] + [5] * 3


def test_a_merge_whose_direction_is_zero_is_flagged_as_theta0(tmp_path, mnist_dir):
    # consensus with k above the number of tasks keeps no weight: θ0 whatever λ is picked
    metrics = run(
        make_cfg(
            tmp_path,
            mnist_dir,
            "experiment=consensus",
            "tasks=[[1],[2]]",
            *FAST,
            "merge.k=3",
            "merge.lambdas=[0.5,1.0]",
        )
    )
    assert metrics["lambda"] > 0 and metrics["merge/collapsed_to_theta0"] is True
    assert metrics["test/acc"] == metrics["theta0/test/acc"]
