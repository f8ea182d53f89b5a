"""Lesson 13's rolling-buffer widget: moving the slider moves the write slot around the ring."""

from __future__ import annotations

import matplotlib

from attention_course.teaching.widgets import rolling_buffer_explorer

matplotlib.use("Agg")  # off screen, in this process only


def test_rolling_buffer_explorer_follows_the_ring() -> None:
    widget = rolling_buffer_explorer(n_sinks=2, window=5, n_tokens=30)
    scheme, slider = widget.controls
    seen = []
    for token in (0, 6, 7, 11, 12, 29):
        slider.value = token
        seen.append((widget.readout["slot"], widget.readout["oldest"], widget.readout["filled"]))
    assert seen == [(0, 2, 1), (6, 2, 7), (2, 3, 7), (6, 7, 7), (2, 8, 7), (4, 25, 7)]


def test_rolling_buffer_explorer_shows_each_position_scheme() -> None:
    widget = rolling_buffer_explorer(n_sinks=2, window=5, n_tokens=30)
    scheme, slider = widget.controls
    slider.value = 12  # wrapped: sinks 0, 1 and tokens 8..12
    in_cache = widget._image.value
    scheme.value = "absolute"
    assert widget._image.value != in_cache  # the label now lists positions 0, 1, 8, ..., 12
