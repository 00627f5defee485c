"""The data stages through real DVC in a temporary copy of the repository."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.repo import copy_repo, dvc

STAGE_MODULES = {"download": "download", "hsv-split": "hsv_split", "shard": "shard", "train": "train",
                 "evaluate": "evaluate"}


def src_imports(module: Path, seen: set[Path] | None = None) -> set[Path]:
    """Every src/ module file that `module` imports, transitively."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("src"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("src")]
        for name in names:
            path = ROOT / (name.replace(".", "/") + ".py")
            if path.exists() and path not in seen and path.name != "__init__.py":
                seen.add(path)
                src_imports(path, seen)
    return seen


def test_every_stage_declares_the_modules_it_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = ROOT / "src" / "stages" / f"{STAGE_MODULES[name]}.py"
        assert stage["cmd"].startswith(f"python -m src.stages.{STAGE_MODULES[name]}")
        needed = {p.relative_to(ROOT).as_posix() for p in src_imports(module) | {module}}
        needed.discard("src/core/params.py")  # params.yaml sections are declared as params, not the loader
        needed.discard("src/core/paths.py")
        missing = needed - set(stage.get("deps", []))
        assert not missing, f"stage {name} imports {sorted(missing)} without declaring them as deps"


@pytest.mark.slow
def test_data_stages_reproduce_and_a_second_run_has_nothing_to_do(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    dvc("repro", "shard", cwd=repo)
    manifest = json.loads((repo / "data" / "shards" / "manifest.json").read_text())
    assert all(manifest["splits"][s]["records"] > 0 for s in ("train", "val", "test"))
    counts = json.loads((repo / "reports" / "hsv_split.json").read_text())
    assert counts["used"] >= 6 and counts["files"] == counts["used"] + counts["skipped"]

    second = dvc("repro", "shard", cwd=repo)  # its time is measured in benchmarks/, not asserted here
    assert "Data and pipelines are up to date" in second.stdout
    shown = dvc("metrics", "show", "--json", cwd=repo)
    assert '"used"' in shown.stdout


@pytest.mark.slow
def test_dvc_repro_on_several_folders_reports_each_file_s_folder(tmp_path):
    import cv2
    import pandas as pd

    from tests.conftest import photo
    from tests.repo import run

    folders = []
    for k, name in enumerate(("city", "forest")):
        folder = tmp_path / "photos" / name
        folder.mkdir(parents=True)
        for i in range(4):  # the same file names in both folders
            cv2.imwrite(str(folder / f"photo{i}.png"), photo(seed=10 * k + i))
        folders.append(str(folder))
    (tmp_path / "photos" / "forest" / "notes.txt").write_text("not a photo")
    repo = copy_repo(tmp_path / "repo")
    profile = tmp_path / "folders.yaml"
    profile.write_text(yaml.safe_dump({"download": {"source": "folders", "folders": folders},
                                       "hsv_split": {"tile": 0}}))
    run([sys.executable, "-m", "src.profile", str(profile)], cwd=repo)
    dvc("repro", "hsv-split", cwd=repo)
    report = pd.read_csv(repo / "reports" / "hsv_split.csv", keep_default_na=False).set_index("file")
    assert report.loc["city/photo0.png", "folder"] == "city" and report.loc["forest/photo0.png", "folder"] == "forest"
    assert report.groupby("folder")["status"].apply(lambda s: (s == "used").sum()).to_dict() == {"city": 4, "forest": 4}
    assert report.loc["forest/notes.txt", "status"] == "skipped"

    # hsv-split depends on download's table of data/raw, not on the folder: a new photo still reaches it
    cv2.imwrite(str(tmp_path / "photos" / "city" / "photo9.png"), photo(seed=9))
    dvc("repro", "-f", "-s", "download", cwd=repo)
    again = dvc("repro", "hsv-split", cwd=repo)
    assert "Running stage 'hsv-split'" in again.stdout
    report = pd.read_csv(repo / "reports" / "hsv_split.csv", keep_default_na=False).set_index("file")
    assert report.loc["city/photo9.png", "status"] == "used"


@pytest.mark.slow
def test_a_param_of_the_wrong_type_is_named_before_any_work_and_an_unusable_folder_still_gets_its_report(tmp_path):
    from tests.repo import run

    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"scan{i}.jpg").write_text("not a photo")
    repo = copy_repo(tmp_path / "repo")
    profile = tmp_path / "junk.yaml"
    profile.write_text(yaml.safe_dump({"download": {"source": "folder", "folder": str(junk)},
                                       "hsv_split": {"image_size": "64"}}))
    run([sys.executable, "-m", "src.profile", str(profile)], cwd=repo)
    dvc("repro", "download", cwd=repo)
    typed = dvc("repro", "hsv-split", cwd=repo, check=False)
    assert typed.returncode != 0
    assert "params.yaml: params hsv_split.image_size must be an integer, got '64' (str)" in typed.stderr
    assert "Traceback" not in typed.stderr and not (repo / "reports" / "hsv_split.csv").exists()  # before any work

    profile.write_text(yaml.safe_dump({"hsv_split": {"image_size": 64}}))
    run([sys.executable, "-m", "src.profile", str(profile)], cwd=repo)
    empty = dvc("repro", "hsv-split", cwd=repo, check=False)
    assert empty.returncode != 0 and "no usable photo among 3 files" in empty.stderr
    report = (repo / "reports" / "hsv_split.csv").read_text()  # the reasons it points to are there
    assert report.count("not an image") == 3 and not (repo / "data" / "hsv").exists()
