"""eval and predict on images: class names from the data through the checkpoint, a run folder's
best.npz, top-k and per-class accuracy, predict on PNG/JPEG files and folders (table, json, --out
.npz/.csv), eval --data FOLDER, and the message for an image given where an .npz is expected."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnrun.cli.main import cli
from cnnrun.engine import CnnrunError, Network
from cnnrun.engine.checkpoint import Checkpoint, load_checkpoint, network_state, save_checkpoint
from cnnrun.engine.eval_report import top_k_correct
from cnnrun.engine.npz import NpzError, read_npz

CLASSES = ["cat", "dog", "owl"]
NET = {"name": "colours", "input": {"shape": [3, 6, 6]},
       "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 3}],
       "train": {"data": {"type": "image_folder", "path": "images", "normalize": True},
                 "optimizer": {"type": "sgd", "lr": 0.1}, "epochs": 3, "batch_size": 8, "validation_split": 0.25}}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
    return path


def class_pixels(rng, label, size=6):
    """Noise with the class's colour channel brighter: easy to learn, not trivially separable."""
    pixels = rng.integers(0, 150, size=(size, size, 3), dtype=np.uint8)
    pixels[..., label] += 100
    return pixels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(folder, network file, run folder)``: the network trained 3 epochs on 8 images per class."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for k in range(8):
            save(root / "images" / name / f"{k}.png", class_pixels(rng, label))
    (root / "net.json").write_text(json.dumps(NET))
    result = run("train", root / "net.json", "--out", root / "run", "-q")
    assert result.exit_code == 0, result.output
    return root, root / "net.json", root / "run"


def test_class_names_travel_into_the_checkpoint(trained):
    _, _, folder = trained
    for name in ("latest.npz", "best.npz"):
        assert load_checkpoint(folder / name).meta["class_names"] == CLASSES


def test_eval_on_a_run_folder_uses_best_and_names_classes(trained):
    _, net, folder = trained
    best_epoch = load_checkpoint(folder / "best.npz").meta["epoch"]
    result = run("eval", net, "--checkpoint", folder)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"checkpoint {folder / 'best.npz'} (epoch {best_epoch})"
    assert "top-3 accuracy 1.0000" in lines[1]  # 5 capped at 3 classes: always right
    assert [line.split()[0] for line in lines[3:6]] == CLASSES  # per-class table
    assert lines[6].split() == ["true\\pred", *CLASSES] and [line.split()[0] for line in lines[7:]] == CLASSES
    report = json.loads(run("eval", net, "--checkpoint", folder / "latest.npz", "--format", "json").output)
    assert report["checkpoint"] == str(folder / "latest.npz") and report["class_names"] == CLASSES
    confusion = np.array(report["confusion_matrix"])
    assert [c["class"] for c in report["per_class"]] == CLASSES
    for c, row in zip(report["per_class"], confusion):
        assert c["examples"] == row.sum() and c["accuracy"] == pytest.approx(row[c["label"]] / row.sum())


def test_eval_on_a_folder_agrees_with_predict_on_it(trained, tmp_path):
    """Top-k and per-class accuracy of eval --data FOLDER, against predict's probabilities for the same files."""
    root, net, folder = trained
    report = json.loads(run("eval", net, "--checkpoint", folder, "--data", root / "images", "--top-k", "2",
                            "--format", "json").output)
    assert report["examples"] == 24 and report["top_k"] == 2
    assert run("predict", net, root / "images", "--checkpoint", folder, "--out", tmp_path / "p.npz").exit_code == 0
    with np.load(tmp_path / "p.npz") as data:
        p, inputs = data["probabilities"].astype(np.float64), list(data["inputs"])
    labels = np.array([CLASSES.index(name.split("/")[-2]) for name in inputs])
    ranks = np.argsort(-p, axis=1)
    assert report["top_k_accuracy"] == pytest.approx(np.mean([y in r[:2] for y, r in zip(labels, ranks)]))
    assert report["accuracy"] == pytest.approx(np.mean(ranks[:, 0] == labels))
    for c in report["per_class"]:
        assert c["accuracy"] == pytest.approx(np.mean(ranks[labels == c["label"], 0] == c["label"]))


def test_top_k_against_a_sort():
    outputs = np.random.default_rng(3).normal(size=(50, 7))
    labels = np.random.default_rng(4).integers(0, 7, 50)
    for k in (1, 3, 7):
        expected = [y in np.argsort(-row)[:k] for row, y in zip(outputs, labels)]
        np.testing.assert_array_equal(top_k_correct(outputs, labels, k), expected)


def test_eval_folder_with_some_classes_keeps_the_network_labels(trained, tmp_path):
    root, net, folder = trained
    rng = np.random.default_rng(5)
    for label in (1, 2):
        for k in range(2):
            save(tmp_path / "some" / CLASSES[label] / f"{k}.png", class_pixels(rng, label))
    report = json.loads(run("eval", net, "--checkpoint", folder, "--data", tmp_path / "some", "--format",
                            "json").output)
    assert [c["examples"] for c in report["per_class"]] == [0, 2, 2] and report["per_class"][0]["accuracy"] is None
    save(tmp_path / "some" / "emu" / "0.png", class_pixels(rng, 0))
    result = run("eval", net, "--checkpoint", folder, "--data", tmp_path / "some")
    assert result.exit_code == 1 and "class 'emu' is not a class of the network (its classes: cat, dog, owl)" \
        in result.output


def test_predict_on_png_and_jpeg_files_and_a_folder(trained, tmp_path):
    root, net, folder = trained
    rng = np.random.default_rng(9)
    png = save(tmp_path / "a.png", class_pixels(rng, 0, size=12))  # resized to 6x6
    jpeg = save(tmp_path / "b.jpg", class_pixels(rng, 2))
    save(tmp_path / "more" / "c.png", class_pixels(rng, 1))
    args = ("predict", net, png, jpeg, tmp_path / "more", "--checkpoint", folder)
    table = run(*args, "--top-k", "2")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].startswith(f"checkpoint {folder / 'best.npz'} (epoch ")
    assert [line.split()[0] for line in lines[1:]] == [str(png), str(jpeg), str(tmp_path / "more" / "c.png")]
    report = json.loads(run(*args, "--format", "json").output)
    assert report["checkpoint"] == str(folder / "best.npz")
    rows = report["predictions"]
    assert len(rows[0]["top"]) == 3  # --top-k 5 capped at 3 classes
    for line, row in zip(lines[1:], rows):
        assert line.split()[1:] == [x for t in row["top"][:2] for x in (t["class"], f"{t['probability']:.4f}")]
        assert sum(t["probability"] for t in row["top"]) == pytest.approx(1.0)
        probabilities = [t["probability"] for t in row["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
    assert run(*args, "--out", tmp_path / "p.csv").exit_code == 0
    with open(tmp_path / "p.csv", newline="") as f:
        header, *body = list(csv.reader(f))
    assert header == ["input", "label", "class", *CLASSES] and len(body) == 3
    for cells, row in zip(body, rows):
        assert cells[0] == row["input"] and cells[2] == row["top"][0]["class"] == CLASSES[int(cells[1])]
        assert float(cells[3 + row["top"][0]["label"]]) == pytest.approx(row["top"][0]["probability"], rel=1e-5)
    assert run(*args, "--out", tmp_path / "p.npz").exit_code == 0
    data = read_npz(tmp_path / "p.npz")
    assert list(data["class_names"]) == CLASSES and list(data["inputs"]) == [r["input"] for r in rows]
    np.testing.assert_array_equal(data["labels"], [r["top"][0]["label"] for r in rows])


def test_predict_on_an_image_applies_the_training_preprocessing(trained, tmp_path):
    """The same probabilities as for the .npz of the image resized (Pillow bilinear) and scaled by 1/255."""
    _, net, folder = trained
    pixels = class_pixels(np.random.default_rng(2), 1, size=10)
    save(tmp_path / "x.png", pixels)
    resized = np.asarray(Image.fromarray(pixels).resize((6, 6), Image.Resampling.BILINEAR))
    np.savez(tmp_path / "x.npz", x=resized.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    image = json.loads(run("predict", net, tmp_path / "x.png", "--checkpoint", folder, "--format", "json").output)
    array = json.loads(run("predict", net, tmp_path / "x.npz", "--checkpoint", folder, "--format", "json").output)
    assert array["predictions"][0]["input"] == f"{tmp_path / 'x.npz'}[0]"
    assert image["predictions"][0]["top"] == array["predictions"][0]["top"]


def test_class_indices_without_class_names(tmp_path, registry):
    config = {"name": "d", "input": {"shape": [1, 8, 8]},
              "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 4}],
              "train": {"data": {"type": "npz", "path": "d.npz"}}}
    (tmp_path / "net.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((8, 8, 8), dtype=np.float32), y=np.arange(8) % 4)
    params, buffers = network_state(Network.from_config(config, registry=registry))
    save_checkpoint(tmp_path / "c.npz", Checkpoint(params, buffers, {}, {"normalization": None}))
    report = json.loads(run("eval", tmp_path / "net.json", "--checkpoint", tmp_path / "c.npz", "--data",
                            tmp_path / "d.npz", "--format", "json").output)
    assert report["class_names"] == ["0", "1", "2", "3"] and report["epoch"] is None
    table = run("predict", tmp_path / "net.json", tmp_path / "d.npz", "--checkpoint", tmp_path / "c.npz")
    assert table.output.splitlines()[1].split()[1] in {"0", "1", "2", "3"}


def test_eval_on_a_cifar_folder_evaluates_its_test_file_with_its_names(tmp_path, registry):
    config = {"name": "c", "input": {"shape": [3, 32, 32]},
              "layers": [{"type": "flatten"}, {"name": "fc", "type": "linear", "out_features": 10}]}
    (tmp_path / "net.json").write_text(json.dumps(config))
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, records in [(f"data_batch_{i}.bin", 2) for i in range(1, 6)] + [("test_batch.bin", 7)]:
        labels = rng.integers(0, 10, size=(records, 1), dtype=np.uint8)
        np.concatenate([labels, rng.integers(0, 256, size=(records, 3072), dtype=np.uint8)], axis=1).tofile(
            folder / name)
    names = [f"class{i}" for i in range(10)]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n")
    params, buffers = network_state(Network.from_config(config, registry=registry))
    save_checkpoint(tmp_path / "c.npz", Checkpoint(params, buffers, {}, {"normalization": None}))
    report = json.loads(run("eval", tmp_path / "net.json", "--checkpoint", tmp_path / "c.npz", "--data", folder,
                            "--format", "json").output)
    assert report["examples"] == 7 and report["class_names"] == names


def test_an_image_where_an_npz_is_expected(trained, tmp_path):
    root, net, folder = trained
    png = root / "images" / "cat" / "0.png"
    result = run("eval", net, "--checkpoint", folder, "--data", png)
    assert result.exit_code == 1 and "is one image: eval takes a folder with one sub-folder of images per class" \
        in result.output
    (tmp_path / "x.npz").write_bytes(png.read_bytes())
    with pytest.raises(NpzError, match=r"x.npz: is a PNG image, not an .npz file of arrays .*image_folder"):
        read_npz(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(NpzError, match=r"y.npz: is a JPEG image"):
        read_npz(tmp_path / "y.npz")
    config = dict(NET, train={**NET["train"], "data": {"type": "npz", "path": "x.npz"}})
    (tmp_path / "net.json").write_text(json.dumps(config))
    result = run("train", tmp_path / "net.json", "--out", tmp_path / "r", "-q")
    assert result.exit_code == 1 and "is a PNG image, not an .npz file" in result.output
    assert "allow_pickle" not in result.output and "Traceback" not in result.output


def test_predict_refuses_what_it_cannot_read(trained, tmp_path):
    _, net, folder = trained
    (tmp_path / "empty").mkdir()
    result = run("predict", net, tmp_path / "empty", "--checkpoint", folder)
    assert result.exit_code == 1 and "the folder has no images" in result.output
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("predict", net, tmp_path / "bad.png", "--checkpoint", folder)
    assert result.exit_code == 1 and "bad.png: cannot decode the image" in result.output
    png = save(tmp_path / "a.png", class_pixels(np.random.default_rng(0), 0))
    before = png.read_bytes()
    result = run("predict", net, png, "--checkpoint", folder, "--out", png)
    assert result.exit_code == 1 and "is the input" in result.output and png.read_bytes() == before
    with pytest.raises(CnnrunError, match="images need a network input of"):
        from cnnrun.engine.predict_inputs import read_inputs
        read_inputs([png], (1, 36), None)


def test_a_fused_checkpoint_keeps_the_class_names(trained, registry):
    from cnnrun.engine.fuse import fuse_network

    root, net, folder = trained
    _, fused, _ = fuse_network(json.loads(net.read_text()), load_checkpoint(folder / "best.npz"), registry=registry)
    assert fused.meta["class_names"] == CLASSES
