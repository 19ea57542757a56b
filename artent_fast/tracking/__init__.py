"""Entanglement tracking during training: ``track(model)`` returns a :class:`Tracker`."""

from artent_fast.tracking.records import read_history, valley_depth
from artent_fast.tracking.tracker import Tracker, track

__all__ = ["Tracker", "read_history", "track", "valley_depth"]
