"""Model builders: SD 1.5 components, the ControlNet branch, the built-in tiny model, asset paths."""
