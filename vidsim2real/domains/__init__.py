"""Target domains: a procedural surrogate for real surgical video, and loaders for real footage."""
