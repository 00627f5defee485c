"""The released model (release/): it colours out of the box, refuses a damaged file, and its card tells the truth."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from src.core.files import sha256_file
from src.data import colour, metrics
from src.model import release
from src.profile import flatten
from src.serving import stamp
from src.stages.download import sample_photos
from tests.conftest import noise, shared_folder
from tests.test_colorize import colorize

DATE, CAMERA = 0x9003, 0x0110  # EXIF DateTimeOriginal, Model


def front_matter() -> dict:
    return yaml.safe_load(release.CARD.read_text().split("---\n")[1])


def mean_chroma(bgr: np.ndarray) -> float:
    return float(np.mean(bgr.max(axis=-1).astype(int) - bgr.min(axis=-1)))


def test_the_release_colours_the_sample_photos_keeping_their_luma_and_exif_and_saying_so(tmp_path):
    inputs, truths = tmp_path / "old", {}
    inputs.mkdir()
    for i, (path, name) in enumerate(sample_photos()):
        truth = cv2.imread(str(path))
        truths[Path(name).stem] = truth
        exif = Image.Exif()
        exif[DATE], exif[CAMERA], exif[stamp.ORIENTATION] = f"1950:06:0{i + 1} 12:00:00", "Leica IIIc", 1
        Image.fromarray(colour.luma(truth)).save(inputs / f"{Path(name).stem}.jpg", quality=95, exif=exif.tobytes())
    done = colorize(str(inputs), "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert noise(done.stderr) == []  # no TensorFlow/absl native lines, no library warnings
    first = next(line for line in done.stderr.splitlines() if line.startswith("INFO"))
    digest = release.verify()
    assert f"model: {release.NAME} {digest[:12]} on onnxruntime (the released model; no registry champion)" in first

    gains, chroma = [], []
    for stem, truth in truths.items():
        out = tmp_path / "out" / f"{stem}.png"
        bgr = cv2.imread(str(out))
        gray = cv2.imread(str(inputs / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert np.abs(colour.luma(bgr).astype(int) - gray).mean() < 1.0  # the photo's own luma, kept
        chroma.append(mean_chroma(bgr))
        gains.append(metrics.psnr(bgr, truth) - metrics.psnr(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), truth))
        with Image.open(out) as im:
            text, exif = im.text, im.getexif()
        assert text["Model"] == release.NAME and text["Model version"] == digest
        assert text["Digital source type"] == stamp.DIGITAL_SOURCE_TYPE and text["Hints"] == "none"
        assert text["Software"] == f"colorizer {stamp.project_version()}"
        assert "Iptc4xmpExt:DigitalSourceType" in text[stamp.XMP_KEY] and "trainedAlgorithmicMedia" in text[stamp.XMP_KEY]
        assert exif[CAMERA] == "Leica IIIc" and exif[DATE].startswith("1950:06:0") and exif[stamp.ORIENTATION] == 1
    assert sorted(chroma)[1] > 5  # colour, not gray (gray has 0): all but the dark Hubble deep field (v5: 9.2 and up)
    assert np.mean(gains) > 1 and np.median(gains) > 1  # colour towards the truth: PSNR above the gray photo's


def test_a_damaged_release_is_refused_in_one_line(tmp_path):
    copy = tmp_path / release.WEIGHTS.name
    shutil.copy(release.WEIGHTS, copy)
    shutil.copy(release.checksum_file(release.WEIGHTS), release.checksum_file(copy))
    assert release.verify(copy) == release.verify()
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    copy.write_bytes(bytes(data))
    with pytest.raises(release.ReleaseError, match="refused: SHA-256"):
        release.load(copy)
    photo = tmp_path / "old.png"
    cv2.imwrite(str(photo), np.full((40, 60), 128, np.uint8))
    done = colorize(str(photo), "--out", str(tmp_path / "out"), "--model", str(copy), tmp_path=tmp_path)
    assert done.returncode == 1 and not (tmp_path / "out" / "old.png").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "refused: SHA-256" in errors[0] and "Traceback" not in done.stderr


def test_the_card_names_the_file_its_checksum_and_the_profile_it_was_trained_with():
    front = front_matter()
    assert release.WEIGHTS.stat().st_size <= 12 * 10**6
    assert front["sha256"] == sha256_file(release.WEIGHTS) == release.expected_sha256(release.WEIGHTS)
    profile = flatten(yaml.safe_load(release.PROFILE.read_text())["train"])
    card = flatten(front["params"])
    assert {k: card.get(k) for k in profile} == {k: list(v) if isinstance(v, tuple) else v for k, v in profile.items()}
    assert release.read_meta()["train"] == front["params"]  # what the file rebuilds is what the card says
    trained_on = yaml.safe_load(release.PROFILE.read_text())["download"]["folders"]
    assert set(front["photos"]) == {Path(folder).name for folder in trained_on}
    base = release.RELEASE_DIR / front["base"]["file"]  # the automatic model it is built on, from its own profile
    assert front["base"]["sha256"] == sha256_file(base) and release.BASE_PROFILE.exists()
    base_profile = yaml.safe_load(release.BASE_PROFILE.read_text())
    assert base_profile["download"]["folders"] == trained_on
    stored = flatten(release.read_meta(base)["train"])
    assert {k: stored.get(k) for k in flatten(base_profile["train"])} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in flatten(base_profile["train"]).items()}
    for set_name in ("val", "cbsd68"):
        s = front["metrics"][set_name]
        assert s["release"]["psnr"] > max(s["gray"]["psnr"], s["constant"]["psnr"])
        assert abs(s["release"]["psnr"] - s["trained"]["psnr"]) < 0.05  # packing to float16 costs nothing visible


def test_the_release_scores_on_cbsd68_what_its_card_says():
    import pandas as pd

    from src.stages import evaluate

    folder = shared_folder("cbsd68")
    card = front_matter()["metrics"]["cbsd68"]
    rows = evaluate.evaluate_folder({"release": release.load()}, folder, 256, (0.0, 0.0), 16)  # constant colour: not compared
    methods = [m for m in ("release", "release_hints10") if m in card]  # a hint model is also scored with hints
    frame = pd.DataFrame(rows)
    table = frame.query("method in @methods or method == 'gray'").groupby("method")[list(card["release"])].mean()
    assert (frame["method"] == "gray").sum() == card["images"] == 68
    for method in methods:
        for figure, value in card[method].items():
            assert table.loc[method, figure] == pytest.approx(value, abs=0.02), (method, figure)
    assert table.loc["gray", "psnr"] == pytest.approx(card["gray"]["psnr"], abs=1e-3)


@pytest.mark.slow
def test_publish_packs_a_named_base_without_scores_and_it_colours_as_the_trained_model(reproduced, tmp_path):
    """`python -m src.publish --name NAME --no-score` (how release v5's automatic model was packed): the file and its
    checksum, no card, the release's own card untouched, and the packed weights colour as the pipeline's model."""
    import json
    import sys

    from tests.repo import run, variant

    repo = variant(reproduced, tmp_path)
    card_before = (repo / "release" / "MODEL_CARD.md").read_text()
    run([sys.executable, "-m", "src.publish", "--name", "my-base", "--no-score"], repo)
    weights = repo / "release" / "my-base.npz"
    assert (repo / "release" / "my-base.sha256").read_text() == f"{sha256_file(weights)}  my-base.npz\n"
    assert not (repo / "release" / "my-base.md").exists()
    assert (repo / "release" / "MODEL_CARD.md").read_text() == card_before
    code = ("import json, numpy as np; from pathlib import Path; from src.model import release; "
            "from src.model.predict import load; from tests.conftest import photo; "
            "im = [photo((64, 96), seed=3)]; a = release.load(Path('release/my-base.npz')).colorize(im)[0]; "
            "b = load(Path('models')).colorize(im)[0]; "
            "print(json.dumps([float(np.abs(a.astype(int) - b).max()), release.read_meta(Path('release/my-base.npz'))['name']]))")
    worst, name = json.loads(run([sys.executable, "-c", code], repo).stdout.strip().splitlines()[-1])
    assert name == "my-base" and worst <= 6  # float16 packing moves a few levels (the 3-epoch default: 4)
