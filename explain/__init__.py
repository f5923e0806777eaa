"""Explanations for decisions (Captum attributions, policy and PII evidence).

Not built yet: issue 9 fills this package. Nothing imports it today; it exists so the
layout the project was asked for is in place and later work has an obvious home.
"""
