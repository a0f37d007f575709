"""Feature cards (issue 23): what a matched pair of features does, side by side, offline."""
