"""Samplers: completions with token log-probs, scoring, weight reloads; Ray actors wrap them."""
