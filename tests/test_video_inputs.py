"""load_video: every input form gives the same frames; sampling against transformers' indices and a
closed form; bad input raises named errors."""

import importlib.util
import sys

import numpy as np

import pytest
import torch
from PIL import Image

from polyformer.errors import ConfigError, DataError
from polyformer.processors.video_inputs import is_single_video, load_video, sample_indices
from _video_files import write_mp4

RNG = np.random.default_rng(0)
HAS_AV = importlib.util.find_spec("av") is not None


def _clip(t=6, h=12, w=16):
    return RNG.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _arrays(frames):
    return np.stack([np.asarray(f.convert("RGB")) for f in frames])


def _gif(array, path):
    frames = [Image.fromarray(a) for a in array]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)


def test_list_array_tensor_channels_first_and_folder_agree(tmp_path):
    clip = _clip()
    for i, frame in enumerate(clip):  # natural order: frame_10 after frame_9, not after frame_1
        Image.fromarray(frame).save(tmp_path / f"frame_{i * 5}.png")
    expected = clip
    for video in ([Image.fromarray(f) for f in clip], list(clip), clip, torch.from_numpy(clip),
                  np.moveaxis(clip, -1, 1), tmp_path):
        np.testing.assert_array_equal(_arrays(load_video(video)), expected)


def test_float_video_range_is_judged_over_the_whole_clip():
    clip = RNG.random((3, 5, 5, 3)).astype(np.float32)
    clip[0] *= 0.001  # a nearly black frame is still a [0, 1] frame, scaled like the others
    got = _arrays(load_video(clip))
    np.testing.assert_array_equal(got, (clip * 255).astype(np.uint8))


def test_grayscale_video_array_gives_grayscale_frames():
    clip = RNG.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    frames = load_video(clip)
    assert [f.mode for f in frames] == ["L"] * 4
    np.testing.assert_array_equal(np.stack([np.asarray(f) for f in frames]), clip)


def test_animated_gif_and_apng(tmp_path):
    # a 4-colour clip survives GIF's palette exactly
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    clip = palette[RNG.integers(0, 4, (5, 10, 10))]
    _gif(clip, tmp_path / "a.gif")
    np.testing.assert_array_equal(_arrays(load_video(tmp_path / "a.gif")), clip)
    rgb = _clip(4)
    frames = [Image.fromarray(a) for a in rgb]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(_arrays(load_video(str(tmp_path / "a.png"))), rgb)


@pytest.mark.parametrize("length,n", [(32, 8), (9, 8), (8, 8), (100, 3), (1, 4), (5, 8)])
def test_uniform_sampling_spreads_over_the_clip(length, n):
    got = sample_indices(length, n)
    expected = [round(i * (length - 1) / (n - 1)) if n > 1 else 0 for i in range(n)]
    assert got == expected
    assert got[0] == 0 and got[-1] == length - 1 and got == sorted(got)


@pytest.mark.parametrize("n,rate", [(8, 1), (8, 4), (3, 2), (16, 3), (1, 5)])
def test_step_sampling_uses_transformers_indices(n, rate):
    # the indices transformers' video-classification pipeline decodes for num_frames / frame_sampling_rate
    expected = np.linspace(0, n * rate - 1, num=n, dtype=np.int64).tolist()
    assert sample_indices(200, n, rate) == expected
    assert sample_indices(7, None, 3) == [0, 3, 6]  # every 3rd frame when no count is asked


def test_load_video_picks_the_sampled_frames():
    clip = _clip(10)
    np.testing.assert_array_equal(_arrays(load_video(clip, num_frames=4)), clip[[0, 3, 6, 9]])
    np.testing.assert_array_equal(_arrays(load_video(clip, num_frames=3, sampling=2)), clip[[0, 2, 5]])
    # fewer frames than asked, uniform: repeated evenly, in order
    np.testing.assert_array_equal(_arrays(load_video(clip[:3], num_frames=5)), clip[[0, 0, 1, 2, 2]])


def test_too_short_for_step_sampling_names_the_fix():
    with pytest.raises(DataError, match=r"need 32 frames but the video has 10.*frame_sampling_rate \(at most 2\)"):
        load_video(_clip(10), num_frames=4, sampling=8)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sampling_settings(bad):
    with pytest.raises(ConfigError):
        sample_indices(10, bad)
    with pytest.raises(ConfigError, match="sampling must be"):
        sample_indices(10, 4, bad if bad != 2.5 else "random")


def test_bad_videos_raise_named_errors(tmp_path):
    with pytest.raises(DataError, match="frame list is empty"):
        load_video([])
    with pytest.raises(DataError, match="no frames"):
        load_video(np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"frame 2 is 9x8 but frame 0 is 8x8.*resize"):
        load_video([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8)), Image.new("RGB", (9, 8))])
    with pytest.raises(DataError, match="looks like one image"):
        load_video(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="not a video"):
        load_video(Image.new("RGB", (8, 8)))
    with pytest.raises(DataError, match="no such video"):
        load_video(tmp_path / "missing.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no frame images"):
        load_video(tmp_path / "empty")


def test_corrupt_and_truncated_gif(tmp_path):
    _gif(_clip(4), tmp_path / "ok.gif")
    data = (tmp_path / "ok.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.gif").write_bytes(b"GIF89a" + bytes(40))
    (tmp_path / "zero.gif").write_bytes(b"")
    for name, message in [("cut.gif", "truncated or corrupt"), ("junk.gif", "corrupt"), ("zero.gif", "empty")]:
        with pytest.raises(DataError, match=message):
            load_video(tmp_path / name)


def test_video_file_without_pyav_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # an import of av now fails, as where PyAV is not installed
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"pip install av.*list of images"):
        load_video(tmp_path / "clip.mp4")


@pytest.mark.skipif(not HAS_AV, reason="PyAV is an optional extra (pip install av); not installed here")
def test_video_file_through_pyav_matches_pyav_decoding(tmp_path):
    import av

    clip = np.repeat(np.repeat(_clip(12, 4, 4), 8, 1), 8, 2)  # blocky frames: lossy coding keeps them close
    write_mp4(clip, tmp_path / "clip.mp4")
    with av.open(str(tmp_path / "clip.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    got = _arrays(load_video(tmp_path / "clip.mp4", num_frames=4, sampling=3))
    np.testing.assert_array_equal(got, decoded[np.linspace(0, 11, 4, dtype=np.int64)])
    assert np.abs(decoded.astype(int) - clip).mean() < 20
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="PyAV cannot decode"):
        load_video(tmp_path / "bad.mp4")


def test_single_video_or_batch():
    frame = np.zeros((4, 4, 3), np.uint8)
    assert is_single_video([frame, frame]) and is_single_video(np.zeros((2, 4, 4, 3)))
    assert is_single_video("a.gif") and is_single_video([Image.new("RGB", (2, 2))])
    assert not is_single_video(["a.gif", "b.gif"]) and not is_single_video([[frame], [frame]])
    assert not is_single_video(np.zeros((2, 3, 4, 4, 3))) and not is_single_video([np.zeros((2, 4, 4, 3))])
