"""Stylizer backends."""
