"""Writing a small mp4 with PyAV, for the tests that read video files."""


def write_mp4(array, path):
    """Frames (T, H, W, 3) uint8 -> an MPEG-4 file at 10 frames/s."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = array.shape[2], array.shape[1], "yuv420p"
        for frame in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
