"""python -m src.mix: two automatic releases mixed weight by weight, the share chosen on validation, packed."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src import mix
from src.model import release

V1, V5_AUTO, V4 = (release.RELEASE_DIR / f"colorizer-lite0-{v}.npz" for v in ("v1", "v5-auto", "v4"))


def copied(folder: Path, *files: Path) -> list[Path]:
    """Release files with their checksums in a folder of the test's (v5-auto names v1 as its base)."""
    folder.mkdir(exist_ok=True)
    for f in files:
        for part in (f, release.checksum_file(f)):
            shutil.copy(part, folder / part.name)
    return [folder / f.name for f in files]


def test_the_packed_mix_holds_each_weight_at_its_share_and_names_both_files(tmp_path):
    first, second = copied(tmp_path / "release", V1, V5_AUTO)
    assert mix.main([str(first), str(second), "--shares", "0.25", "--name", "mixed"]) == 0
    packed = tmp_path / "release" / "mixed.npz"
    meta, got = release._stored(packed)  # checked against its .sha256 on the way
    a, b = release._stored(first)[1], release._stored(second)[1]
    assert set(got) == set(a)
    for key in a:  # stored as float16 differences from the wheel's weights
        np.testing.assert_allclose(got[key], 0.75 * a[key] + 0.25 * b[key], rtol=2e-3, atol=2e-3, err_msg=key)
    assert meta["mixed"] == {"share": 0.25, "of": [{"file": f.name, "sha256": release.verify(f)}
                                                   for f in (first, second)]}
    assert meta["trained"]["train_s"] == pytest.approx(release.read_meta(first)["trained"]["train_s"]
                                                       + release.read_meta(second)["trained"]["train_s"], abs=0.1)
    assert release.load(packed).image_size == 288  # a release like any other


def test_the_share_is_scored_on_validation_and_the_pick_costs_the_first_nothing(tmp_path, tiny_shards, capsys):
    first, second = copied(tmp_path / "release", V1, V5_AUTO)
    table_file = tmp_path / "mix.md"
    assert mix.main([str(first), str(second), "--shares", "1", "--shards", str(tiny_shards.root),
                     "--out", str(table_file)]) == 0
    out = capsys.readouterr().out
    assert "pick: share" in out and table_file.read_text() in out
    rows = [[float(cell) for cell in line.strip("|").split("|")] for line in table_file.read_text().splitlines()[2:]]
    assert [row[0] for row in rows] == [0.0, 1.0]  # the first model itself is always scored
    assert rows[0][2] != rows[1][2]  # two models, two colourfulness scores
    assert not list(tmp_path.joinpath("release").glob("*mixed*"))  # no --name: nothing packed


@pytest.mark.parametrize(("psnr", "hue", "expected"), [
    ([1.0, 1.1, 1.0, 0.9], [0.80, 0.79, 0.80, 0.78], 0.5),  # 0.7 pays PSNR
    ([1.0, 1.1, 1.2, 1.3], [0.80, 0.79, 0.81, 0.78], 0.7),  # 0.5 pays hue, 0.7 nothing
    ([1.0, 0.9, 0.8, 0.7], [0.80, 0.79, 0.78, 0.77], 0.0),  # every share pays: the first model
])
def test_the_pick_is_the_largest_share_that_pays_neither_psnr_nor_hue(psnr, hue, expected):
    table = pd.DataFrame({"share": [0.0, 0.3, 0.5, 0.7], mix.PSNR: psnr, mix.COLOUR: [0.5] * 4, mix.HUE: hue})
    assert mix.pick(table) == expected


def test_models_that_do_not_mix_are_refused_in_one_line(tmp_path, caplog):
    first, hinted = copied(tmp_path / "release", V1, V4)
    assert mix.main([str(first), str(hinted), "--shares", "0.5", "--name", "x"]) == 1
    assert "not two automatic models of one network" in caplog.text
    damaged = tmp_path / "release" / V5_AUTO.name
    copied(tmp_path / "release", V5_AUTO)
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert mix.main([str(first), str(damaged), "--shares", "0.5", "--name", "x"]) == 1
    assert "refused: SHA-256" in caplog.text
    assert not (tmp_path / "release" / "x.npz").exists()
    with pytest.raises(SystemExit):
        mix.main([str(first), str(first), "--shares", "1.5"])
