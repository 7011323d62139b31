"""Papers' protocols (issue 26): nothing held out for validation where nothing is searched, Mammoth's ER and A-GEM
memories, memory draws seeded by the run, task-IL beside class-IL from one run, "classes seen so far" training and
van de Ven's LwF, the paper presets."""


from conftest import FAST, make_cfg

# ---------- data.val_fraction=0


def test_nothing_held_out_trains_on_every_image_and_reports_no_validation(tmp_path, mnist_dir):
    from music.run import load_data, run

    overrides = ["experiment=sequential", *FAST, "tasks=[[0,1],[2,3]]", "pretrain=none", "data.val_fraction=0"]
    cfg = make_cfg(tmp_path, mnist_dir, *overrides)
    split = load_data(cfg).split
    assert len(split.val) == 0
    assert len(split.union_train) == 4 * 60  # every training image of the tasks' classes (60 per class)
    metrics = run(cfg)
    assert metrics["val/acc"] is None and metrics["test/acc"] is not None
