"""The feature-visualization method (parametrization, transforms, objectives, the loop) and how it is computed."""
