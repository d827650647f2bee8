"""The online iteration's stages: draw prompts, generate, score, select, with the stage log that orders them."""
