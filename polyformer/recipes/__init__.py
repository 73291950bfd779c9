"""Training recipes: complete, measured runs that prove a model family learns."""
