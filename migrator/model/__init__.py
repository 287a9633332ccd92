"""The postcopy model: calibrated here, validated against measured runs, predicting any size."""
