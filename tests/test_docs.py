"""The documentation: README.md opens with the two commands CI runs, every command in a ```bash block of README.md and
docs/*.md is accepted as written (composed and checked here; run for real in the slow tier), and the mkdocs site builds
with --strict, so a broken link or anchor fails.

A command whose line says `not run by the tests` (a GPU job, the network, a cluster) is only composed."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import CONFIGS, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = "not run by the tests"
PY = ".venv/bin/python"


def bash_blocks(page: Path) -> list[list[str]]:
    """The commands of each ```bash block (indented blocks in lists too), continuation lines joined."""
    blocks, block = [], None
    for line in page.read_text().splitlines():
        text = line.strip()
        if block is None:
            block = [] if text == "```bash" else None
        elif text == "```":
            blocks.append(block)
            block = None
        elif text and not text.startswith("#"):
            if block and block[-1].endswith("\\"):
                block[-1] = block[-1][:-1] + text
            else:
                block.append(text)
    return blocks


BLOCKS = [(page, i, block) for page in PAGES for i, block in enumerate(bash_blocks(page))]
COMMANDS = [(page, block, line) for page, _, block in BLOCKS for line in block]


def test_readme_opens_with_the_two_commands_ci_runs_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    first = [shlex.split(line, comments=True) for line in bash_blocks(ROOT / "README.md")[0]]
    assert first == [["make", "install", "&&", "make", "train"], ["make", "install", "&&", "make", "test"]]
    assert len(readme.splitlines()) <= 160
    assert re.search(r"`make test` takes ~\d+ min on 2 cores", readme)
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):  # relative links and images: they exist
        assert (ROOT / target).exists(), target


def test_the_docs_hold_commands_of_each_kind():
    assert len(COMMANDS) >= 15 and {p.name for p, _, _ in COMMANDS} >= {"README.md", "methods.md", "protocols.md"}


def check_train(args: list[str], run_checks: bool) -> None:
    """Compose `train.py args` as Hydra does (a sweep: each job Hydra's basic sweeper makes of the preset's params and
    the command's sweeps, one seed of each) and make the checks a run makes before any work. A command not run by the
    tests: its first job only, composed and not checked."""
    from music.config import validate
    from music.data.resolve import resolve
    from music.settings import check_declared
    from music.strategies import STRATEGIES

    multirun = bool({"-m", "--multirun"} & set(args))
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        parsed = parser.parse_overrides(overrides)
        plain = [o.input_line for o in parsed if not o.is_sweep_override()]
        assert multirun or plain == overrides, "a sweep's values without -m"
        cfg = compose("train", overrides=plain, return_hydra_config=True)  # Hydra's own settings are checked here
        configs = [cfg]
        if multirun and run_checks:
            params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
            jobs = BasicSweeper.split_arguments(
                parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides), None
            )[0]
            first = {}  # seeds change nothing the checks read: a 5-seed preset costs one compose per method
            jobs = [j for j in jobs if first.setdefault(tuple(o for o in j if not o.startswith("seed=")), j) is j]
            configs = [compose("train", overrides=[o for o in job if not o.startswith("hydra")]) for job in jobs]
        for cfg in configs if run_checks else []:
            check_declared("data", cfg.data)
            validate(cfg, STRATEGIES, resolve(cfg))


def produced_by(block: list[str]) -> set[str]:
    """The folders a block's sweeps and runs write (`hydra.sweep.dir=`, `hydra.run.dir=`), for the report after them."""
    return {m for line in block for m in re.findall(r"hydra\.(?:sweep|run)\.dir=(\S+)", line)}


@pytest.mark.parametrize("page,block,line", COMMANDS, ids=[f"{p.name}:{line[:60]}" for p, _, line in COMMANDS])
def test_every_documented_command_is_accepted_as_written(page, block, line):
    run_checks = NOT_RUN not in line
    for argv in (shlex.split(part, comments=True) for part in line.split("&&")):
        if argv[0] == "make":  # the target and its variables exist: make's dry run
            result = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
        elif argv[:2] == [PY, "train.py"]:
            check_train(argv[2:], run_checks)
        elif argv[:3] == [PY, "-m", "music.report"]:  # its folders exist or a command before it writes them
            folders = [a for a in argv[3:] if not a.startswith("-")]
            assert all(f in produced_by(block) or (ROOT / f).exists() for f in folders), folders
        elif argv[0] == PY and argv[1].endswith(".py") and run_checks:  # a script: it exists and parses its options
            result = subprocess.run([sys.executable, argv[1], "--help"], cwd=ROOT, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
        else:
            assert not run_checks, f"{page.name}: no check for {line!r}: teach this test one, or say '{NOT_RUN}'"


@pytest.mark.slow
@pytest.mark.parametrize("page,index,block", BLOCKS, ids=[f"{p.name}:block{i}" for p, i, _ in BLOCKS])
def test_every_documented_block_runs_as_written(tmp_path, page, index, block):
    """Each block in a fresh folder (the checkout's code, venv and configs linked in; its own logs/ and cache)."""
    if block[0].startswith("make install"):
        pytest.skip("the two commands CI runs (.ci/run)")
    if any(NOT_RUN in line for line in block):
        pytest.skip(f"a command of the block says: {NOT_RUN}")
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "logs", "site", "data"):
            (tmp_path / entry.name).symlink_to(entry)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(block)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{page.name} block {index}:\n{result.stderr[-3000:]}"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})


def test_the_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    built = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "methods" / "index.html").exists()

    (tmp_path / "copy").mkdir()  # the same site with one link to an anchor no page has
    (tmp_path / "copy" / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "copy" / "docs"
    subprocess.run(["cp", "-r", str(ROOT / "docs"), str(docs)], check=True)
    (docs / "index.md").write_text((docs / "index.md").read_text() + "\n[broken](data.md#no-such-section)\n")
    broken = mkdocs_build(tmp_path / "copy" / "mkdocs.yml", tmp_path / "site2")
    assert broken.returncode != 0 and "no-such-section" in broken.stderr
