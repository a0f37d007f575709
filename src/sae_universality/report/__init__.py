"""The report stage: heatmaps and figures, and the verdict that reads every score with its controls."""
