"""Tray-state and style icons (data; made by stylecam.desktop.make_icons)."""
